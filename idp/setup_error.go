package idp

// SetupError is an IdP's answer refused because the proxy and the IdP are
// not set up alike: the client secret, a URL registered at the IdP, the
// certificate that signs its answers, the clocks. The user can do nothing
// about it but tell the administrator.
//
// Reason is a stable word for logs and alerts (invalid_client,
// token_exchange, clock_skew, saml_signature, ...). Hint says what to check,
// in configuration keys and in what the IdP sent: it is for the operator's
// log, never for a page, and holds no secret.
type SetupError struct {
	Reason string
	Hint   string
	Err    error
}

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

// setupError wraps err as a *SetupError.
func setupError(reason, hint string, err error) error {
	return &SetupError{Reason: reason, Hint: hint, Err: err}
}
