package proxy

import (
	"errors"
	"strconv"
	"strings"

	"github.com/portcullis-proxy/portcullis/attrpass"
	"github.com/portcullis-proxy/portcullis/idp"
)

// whyUnpassable is "identity_unpassable", the why of a login refused
// because its identity cannot be passed to the upstream.
const whyUnpassable = "identity_unpassable"

// unpassable works out the identity the attribute pass sets for p, whose
// roles are mapped, remembered under session ("" for none), as the
// session's requests will (forwardAs); it returns why the login must be
// refused when that fails, nil when p may go on. A profile whose email or
// name holds a line break or NUL (an IdP's attribute that its users edit,
// a directory entry typed with one) gives a header value no request can
// carry: admitted, every request of its session would be refused with 500.
// Refused here, the user learns why at the login, as for the admission
// rules, and the operator which header and field hold what kind of byte;
// the value itself stays out of both.
func (h *Handler) unpassable(session string, p *idp.Profile) *idp.AdmissionError {
	_, err := h.pass.For(session, p)
	if err == nil {
		return nil
	}
	idpName := p.IdP
	if pr := h.providers[p.IdP]; pr != nil {
		idpName = pr.cfg.DisplayName()
	}
	refused := &idp.AdmissionError{Rule: "attribute_pass"}
	var bad *attrpass.ValueError
	if !errors.As(err, &bad) {
		// The expression failed for this profile (a claim it reads is
		// missing or of another type): the operator's to fix.
		refused.Reason = "Your account's details cannot be passed on to this application. Tell your administrator, with the request ID below."
		refused.Hint = err.Error() + "; the attribute_pass headers are worked out at login for every session, and a profile they fail for cannot sign in: " +
			"make the expression allow for what this IdP sends (portcullis explain --claims shows it)"
		return refused
	}
	what := "account's details"
	if len(bad.Fields) > 0 {
		what = fieldWords(bad.Fields[0])
	}
	refused.Reason = "Your " + what + " at " + idpName + " contains a line break or another control character, which cannot be passed on to this application. " +
		"Ask your administrator to correct it at " + idpName + ", then sign in again."
	from := "from no profile field (the expression's own text)"
	if len(bad.Fields) > 0 {
		from = "from the profile's " + strings.Join(bad.Fields, ", ")
	}
	refused.Hint = "attribute_pass header " + bad.Header + " would carry " + bad.Class() + " at byte " + strconv.Itoa(bad.At) + ", " + from +
		": a header value cannot carry control characters (CR and LF would end the header, NUL is cut by upstreams), so this identity cannot reach the upstream; " +
		"correct the attribute at the IdP, or pass a value without it (docs/troubleshooting.md)"
	return refused
}

// fieldWords is a profile field as the user knows it.
func fieldWords(field string) string {
	switch field {
	case "email":
		return "email address"
	case "name", "first_name", "last_name":
		return "name"
	case "username":
		return "username"
	case "groups":
		return "group names"
	case "sub":
		return "account ID"
	}
	return "account's details"
}
