package idp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"
)

// LDAPProvider checks usernames and passwords against an LDAP directory
// (Active Directory, FreeIPA, OpenLDAP): it finds the user with the service
// account, binds as the user to check the password, and reads the user's
// groups. It satisfies Provider and PasswordChecker.
type LDAPProvider struct {
	cfg     Config
	log     *slog.Logger
	pool    *ldapPool
	mapping ldapMapping
	timing  ldapTiming
	// nested says whether Authenticate walks group nesting itself: when the
	// group filter names the user's DN and is not AD's in-chain rule.
	nested bool

	// lastErr is why the directory could not be used last time (nil: it
	// could); notChecked until the first attempt.
	lastErr atomic.Pointer[error]
	// binds counts the binds as a user (password checks) that reached the
	// directory.
	binds atomic.Int64
}

// Limits on what a login may make the provider do.
const (
	// maxUsernameBytes and maxPasswordBytes bound what is sent to the
	// directory; longer values are refused as wrong credentials.
	maxUsernameBytes = 256
	maxPasswordBytes = 1024
	// maxGroupDepth bounds the group nesting walked (groups of groups of
	// the user's groups...).
	maxGroupDepth = 8
	// maxGroups bounds the groups kept for one user; a list cut there is
	// logged. The session must fit the cookie store (8 cookies of 3,800
	// bytes): sealed, 1,000 Active Directory group DNs take about 14 KB,
	// 27 KB with the same DNs in claims.memberOf, and 1,500 would not fit.
	// Windows itself refuses to log on a user in more than about 1,010
	// security groups (KB 328889).
	maxGroups = 1000
	// groupsPerSearch bounds the DNs asked for in one nested-group search.
	groupsPerSearch = 50
	// groupPageSize is the page size of group searches (RFC 2696 paged
	// results), below Active Directory's MaxPageSize (1000), so that no
	// page asks for more than a domain controller answers at once.
	groupPageSize = 500
)

var errNotChecked = errors.New("directory not reached yet")

func newLDAP(ctx context.Context, c Config, o Options) (Provider, error) {
	return newLDAPProvider(ctx, c, o, defaultLDAPTiming)
}

func newLDAPProvider(ctx context.Context, c Config, o Options, timing ldapTiming) (*LDAPProvider, error) {
	if errs := c.validateLDAP(); len(errs) > 0 {
		return nil, fmt.Errorf("ldap %s: config: %w", c.ID, errors.Join(errs...))
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("idp", c.ID)
	u, _ := url.Parse(c.URL) // validateLDAP parsed it
	tlsConfig, err := c.tlsConfig(u)
	if err != nil {
		return nil, fmt.Errorf("ldap %s: %w", c.ID, err)
	}
	filter := c.GroupSearch.Filter
	p := &LDAPProvider{
		cfg:     c,
		log:     log,
		pool:    newLDAPPool(u, tlsConfig, c.StartTLS, timing),
		mapping: newLDAPMapping(c.AttributeMapping),
		timing:  timing,
		nested:  strings.Contains(filter, placeholderDN) && !strings.Contains(filter, inChainOID),
	}
	p.lastErr.Store(&errNotChecked)
	go p.checkLoop(ctx)
	return p, nil
}

// Ready reports whether the service account could bind at the last check
// (at start, every half minute, and on every login).
func (p *LDAPProvider) Ready() error {
	if errp := p.lastErr.Load(); errp != nil {
		if errors.Is(*errp, ErrNotReady) {
			return *errp // it says so, and keeps its *SetupError
		}
		return fmt.Errorf("ldap %s: %w: %v", p.cfg.ID, ErrNotReady, *errp)
	}
	return nil
}

// Binds is how many password checks (binds as a user) reached the
// directory so far.
func (p *LDAPProvider) Binds() int64 { return p.binds.Load() }

// checkLoop binds with the service account now and then, so that Ready
// follows the directory, until ctx ends; then it closes the pool.
func (p *LDAPProvider) checkLoop(ctx context.Context) {
	defer p.pool.close()
	t := time.NewTicker(p.timing.check)
	defer t.Stop()
	for {
		err := p.check(ctx)
		if setup, ok := errors.AsType[*SetupError](err); ok {
			msg := "ldap: the directory refuses the service account"
			switch setup.Reason {
			case "directory_certificate":
				msg = "ldap: the directory's certificate is refused"
			case "directory_requires_tls":
				msg = "ldap: the directory requires TLS"
			}
			p.log.Error(msg, "reason", setup.Reason, "hint", setup.Hint, "err", err)
		} else if err != nil && ctx.Err() == nil {
			p.log.Warn("ldap: directory unavailable", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check takes a connection, binds as the service account and hands it back.
func (p *LDAPProvider) check(ctx context.Context) error {
	c, err := p.serviceConn(ctx)
	if err != nil {
		return err
	}
	p.pool.put(c, true)
	return nil
}

// setState records whether the directory could be used.
func (p *LDAPProvider) setState(err error) {
	if err == nil {
		p.lastErr.Store(nil)
		return
	}
	p.lastErr.Store(&err)
}

// serviceConn returns a connection bound as the service account (or
// anonymously, without bind_dn). A pooled connection that turns out to be
// dead (the directory restarted, or closed it idle, just as the bind went
// out) is replaced once, by a new connection: the other kept ones most
// likely ended with it (a restart, or the same sweep of slapd's
// olcIdleTimeout), and the retry taking the next of them failed the login
// with 503 although the directory was up.
func (p *LDAPProvider) serviceConn(ctx context.Context) (*ldap.Conn, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := p.pool.get(ctx, attempt > 0)
		if err != nil {
			err = p.cfg.certificateSetupError(fmt.Errorf("ldap %s: connect: %w: %w", p.cfg.ID, ErrNotReady, err))
			p.setState(err)
			return nil, err
		}
		err = p.bindService(c)
		if err == nil {
			p.setState(nil)
			return c, nil
		}
		p.pool.discard(c)
		if reused && attempt == 0 && isUnavailable(err) {
			continue
		}
		refused, wantsTLS := passwordRefused(err), p.wantsTLS(err)
		err = fmt.Errorf("ldap %s: bind as service account: %w: %w", p.cfg.ID, ErrNotReady, err)
		switch {
		case wantsTLS:
			err = p.requiresTLSError(err)
		case refused:
			// Not the directory being away, which waiting mends: every
			// login fails so until the configuration changes.
			hint := fmt.Sprintf("the directory refused the service account: check bind_dn (%q) and bind_password (or %s); "+
				"in Active Directory the account may also be locked, disabled or its password expired", p.cfg.BindDN, p.cfg.envName("BIND_PASSWORD"))
			if p.cfg.BindDN == "" {
				hint = "the directory does not let anonymous clients search: set bind_dn and bind_password to a service account's"
			}
			err = setupError("service_bind", hint, err)
		}
		p.setState(err)
		return nil, err
	}
}

// wantsTLS tells a bind refused because the connection is not encrypted:
// Active Directory with LDAP signing required (Windows Server 2025's
// default; Samba's `ldap server require strong auth`, on by default)
// answers strongerAuthRequired, OpenLDAP with olcSecurity's tls or ssf
// confidentialityRequired. Over TLS the same codes mean something else
// (AD's channel binding, a stronger ssf), which TLS would not mend.
func (p *LDAPProvider) wantsTLS(err error) bool {
	return p.pool.tls == nil && ldap.IsErrorAnyOf(err, ldap.LDAPResultStrongAuthRequired, ldap.LDAPResultConfidentialityRequired)
}

// requiresTLSError is err, a bind that wantsTLS, as the *SetupError it is:
// every login fails so until the url or start_tls changes, and "try again
// in a moment" would send users away to come back to the same refusal.
func (p *LDAPProvider) requiresTLSError(err error) error {
	err = setupError("directory_requires_tls", fmt.Sprintf("the directory refuses passwords over a connection without TLS: "+
		"use ldaps://%s (port 636) or keep ldap:// with start_tls: true, and ca_file when its CA is not in the system's trust store",
		p.pool.url.Hostname()), err)
	p.setState(err)
	return err
}

func (p *LDAPProvider) bindService(c *ldap.Conn) error {
	if p.cfg.BindDN == "" {
		// Anonymous: also drops the identity of whoever used c before.
		_, err := c.SimpleBind(&ldap.SimpleBindRequest{AllowEmptyPassword: true})
		return err
	}
	return c.Bind(p.cfg.BindDN, p.cfg.BindPassword)
}

// Authenticate checks username and password against the directory and
// returns the user's profile. Wrong passwords, unknown users, usernames
// that match more than one entry, and empty passwords all give
// ErrInvalidCredentials, so that the answer does not tell which; a
// directory that cannot be reached gives an error wrapping ErrNotReady.
// allow, when not nil, is asked with the entry's DN before the bind
// (PasswordChecker).
func (p *LDAPProvider) Authenticate(r *http.Request, username, password string, allow func(account string) error) (*Profile, error) {
	id := p.cfg.ID
	// An empty password would make a simple bind "unauthenticated", which
	// many directories answer with success: it never reaches a bind.
	if password == "" || len(password) > maxPasswordBytes || !acceptableUsername(username) {
		return nil, fmt.Errorf("%w: empty password, or a username no account can have", ErrInvalidCredentials)
	}
	ctx := r.Context()
	c, err := p.serviceConn(ctx)
	if err != nil {
		return nil, err
	}
	healthy := false
	defer func() { p.pool.put(c, healthy) }()

	entry, err := p.findUser(c, username)
	if err != nil {
		healthy = !isUnavailable(err)
		return nil, p.classifySearch("search user", "user_search", p.cfg.UserSearch.BaseDN, err)
	}
	if allow != nil {
		if err := allow(entry.DN); err != nil {
			healthy = true // the search went through
			return nil, err
		}
	}
	p.binds.Add(1)
	policy, err := bindUser(c, entry.DN, password)
	if acct := policyAccountError(policy); acct != nil {
		// The password was right (ppolicy answers so for no other), but
		// the account may not be used as it is.
		healthy = !isUnavailable(err)
		p.log.Info("ldap: account refused", "dn", entry.DN, "policy", policy.String(), "err", err)
		return nil, acct
	}
	if err != nil {
		healthy = !isUnavailable(err)
		if acct := adAccountError(err); acct != nil {
			p.log.Info("ldap: account refused", "dn", entry.DN, "err", err)
			return nil, acct
		}
		if passwordRefused(err) {
			// The directory says why in the diagnostic (disabled, locked,
			// account expired): worth a log line, never the user's page,
			// since it says so whatever the password.
			p.log.Info("ldap: password refused", "dn", entry.DN, "err", err)
			return nil, fmt.Errorf("%w: the directory refused the password of %s", ErrInvalidCredentials, entry.DN)
		}
		if p.wantsTLS(err) {
			return nil, p.requiresTLSError(p.classify("bind as user", err))
		}
		return nil, p.classify("bind as user", err)
	}
	if policy != nil && policy.Expire >= 0 {
		p.log.Info("ldap: password expires soon", "dn", entry.DN, "seconds", policy.Expire)
	}
	// Groups are read as the service account: users may not see them.
	if err := p.bindService(c); err != nil {
		healthy = false
		return nil, p.classify("bind as service account", err)
	}
	// {username} in group_search is the directory's name of the user, as
	// a posixGroup's memberUid holds it (case-exact), not what was typed:
	// "ANN", or ann's mail address with a filter that takes either.
	groups, err := p.groups(c, entry, p.mapping.username(entry, username))
	if err != nil {
		healthy = !isUnavailable(err)
		return nil, p.classifySearch("search groups", "group_search", p.cfg.GroupSearch.BaseDN, err)
	}
	healthy = true
	return p.mapping.profile(id, entry, username, groups), nil
}

// classify wraps err from step: ErrInvalidCredentials passes as is,
// anything else means the directory could not answer the login (503).
func (p *LDAPProvider) classify(step string, err error) error {
	if errors.Is(err, ErrInvalidCredentials) {
		return err
	}
	if isUnavailable(err) {
		p.setState(err)
	}
	return fmt.Errorf("ldap %s: %s: %w: %w", p.cfg.ID, step, ErrNotReady, err)
}

// classifySearch is classify for a search of the configuration's key
// (user_search, group_search) under baseDN: a base DN the directory does not
// have, or does not let the service account read, is a *SetupError, since
// every login fails so and the directory is not to blame.
func (p *LDAPProvider) classifySearch(step, key, baseDN string, err error) error {
	err = p.classify(step, err)
	switch {
	case ldap.IsErrorAnyOf(err, ldap.LDAPResultNoSuchObject, ldap.LDAPResultInvalidDNSyntax):
		return setupError(key, fmt.Sprintf("%s.base_dn %q is no entry of the directory (or one the service account may not see): "+
			"check its spelling against the directory's naming context", key, baseDN), err)
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights):
		return setupError(key, fmt.Sprintf("the service account (bind_dn) may not search %s.base_dn %q: grant it read access there", key, baseDN), err)
	}
	return err
}

// acceptableUsername refuses what no directory account is named: empty,
// overlong, invalid UTF-8, control characters (NUL included).
func acceptableUsername(u string) bool {
	if strings.TrimSpace(u) == "" || len(u) > maxUsernameBytes || !utf8.ValidString(u) {
		return false
	}
	return !strings.ContainsFunc(u, unicode.IsControl)
}

// Refusals of a username, ErrInvalidCredentials as a wrong password is: the
// user must not learn which, the operator's log says it.
var (
	errNoEntry     = fmt.Errorf("%w: no entry under user_search.base_dn matches user_search.filter", ErrInvalidCredentials)
	errManyEntries = fmt.Errorf("%w: more than one entry matches user_search.filter", ErrInvalidCredentials)
)

// findUser returns the one entry user_search finds for username. No entry,
// or more than one, is ErrInvalidCredentials.
func (p *LDAPProvider) findUser(c *ldap.Conn, username string) (*ldap.Entry, error) {
	filter := fillFilter(p.cfg.UserSearch.Filter, username, "")
	req := ldap.NewSearchRequest(p.cfg.UserSearch.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(p.timing.op/time.Second), false, filter, p.mapping.attributes(), nil)
	res, err := c.Search(req)
	if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		p.log.Warn("ldap: username matches more than one entry; refusing", "username", username)
		return nil, errManyEntries
	}
	if err != nil {
		return nil, err
	}
	switch len(res.Entries) {
	case 0:
		return nil, errNoEntry
	case 1:
		return res.Entries[0], nil
	}
	p.log.Warn("ldap: username matches more than one entry; refusing", "username", username, "entries", len(res.Entries))
	return nil, errManyEntries
}

// groups returns the DNs of the user's groups: from group_search when
// configured (walking nesting when the filter names {dn} and is not AD's
// in-chain rule), else from the user entry's memberOf. Searches are paged,
// so that a directory's page limit (AD's MaxPageSize) does not end them;
// a list cut at maxGroups, or by a limit the directory keeps, is logged.
func (p *LDAPProvider) groups(c *ldap.Conn, user *ldap.Entry, username string) ([]string, error) {
	gs := p.cfg.GroupSearch
	if gs.Filter == "" {
		dns, cut := p.mapping.memberOf(user)
		p.warnGroupsCut(user, username, len(dns), cut)
		return dns, nil
	}
	var all []string
	var cut string // why the list is incomplete; "" when it is not
	seen := map[string]bool{}
	members := []string{user.DN}
walk:
	for depth := 0; len(members) > 0 && depth < maxGroupDepth; depth++ {
		var next []string
		for start := 0; start < len(members); start += groupsPerSearch {
			filter := groupsOf(gs.Filter, username, members[start:min(start+groupsPerSearch, len(members))])
			// The size limit is for the whole paged search (RFC 2696):
			// one more than is kept tells a cut list from a full one.
			req := ldap.NewSearchRequest(gs.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
				maxGroups+1, int(p.timing.op/time.Second), false, filter, []string{"1.1"}, nil)
			res, err := c.SearchWithPaging(req, groupPageSize)
			if ldap.IsErrorWithCode(err, ldap.LDAPResultAdminLimitExceeded) {
				// OpenLDAP refuses a page larger than its size.pr limit;
				// its plain size limit may still be enough.
				req.Controls = nil
				res, err = c.Search(req)
			}
			// res is nil when the plain search above could not be sent;
			// a size limit's error comes with the entries before it.
			if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) && len(res.Entries) > 1 && len(res.Entries) < groupPageSize {
				// 389 Directory Server's nsslapd-sizelimit bounds each
				// page, not the whole paged search: a limit under
				// groupPageSize ends the first page early, with the
				// limit's number of entries. A page that reaches the
				// limit ends so too; pages one smaller get every group.
				// A limit on the whole search (OpenLDAP's) ends this one
				// where the first did.
				req.Controls = nil
				res, err = c.SearchWithPaging(req, uint32(len(res.Entries)-1))
			}
			if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
				if len(res.Entries) <= maxGroups {
					cut = "the directory's size limit for the service account ended the group search"
				}
			} else if err != nil {
				return nil, err
			}
			for _, e := range res.Entries {
				key := strings.ToLower(e.DN)
				if seen[key] {
					continue
				}
				if len(all) == maxGroups {
					cut = groupsCapReason
					break walk
				}
				seen[key] = true
				all = append(all, e.DN)
				next = append(next, e.DN)
			}
		}
		if !p.nested {
			break
		}
		members = next
	}
	if cut == "" && p.nested && len(members) > 0 {
		// The walk stopped at maxGroupDepth with groups whose own groups
		// were not looked for; whether there are any is one search away.
		// A directory that fails this search gets the warning too.
		if deeper, err := p.anyGroupOf(c, username, members); deeper || err != nil {
			cut = groupsDepthReason
		}
	}
	p.warnGroupsCut(user, username, len(all), cut)
	return all, nil
}

// groupsOf is the group search filter for the groups of any of dns.
func groupsOf(filter, username string, dns []string) string {
	if len(dns) == 1 {
		return fillFilter(filter, username, dns[0])
	}
	var b strings.Builder
	b.WriteString("(|")
	for _, dn := range dns {
		b.WriteString(fillFilter(filter, username, dn))
	}
	b.WriteString(")")
	return b.String()
}

// anyGroupOf reports whether any of dns is a member of a group.
func (p *LDAPProvider) anyGroupOf(c *ldap.Conn, username string, dns []string) (bool, error) {
	gs := p.cfg.GroupSearch
	for start := 0; start < len(dns); start += groupsPerSearch {
		req := ldap.NewSearchRequest(gs.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			1, int(p.timing.op/time.Second), false, groupsOf(gs.Filter, username, dns[start:min(start+groupsPerSearch, len(dns))]), []string{"1.1"}, nil)
		res, err := c.Search(req)
		if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if len(res.Entries) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// groupsDepthReason is why a list cut at maxGroupDepth is incomplete.
var groupsDepthReason = fmt.Sprintf("groups are nested more than %d levels deep; the deeper ones were not looked for", maxGroupDepth)

// groupsCapReason is why a list cut at maxGroups is incomplete.
var groupsCapReason = fmt.Sprintf("the user is in more groups than the %d portcullis keeps", maxGroups)

// warnGroupsCut logs a group list that is incomplete for reason: roles and
// admission rules may then miss a group the user is in.
func (p *LDAPProvider) warnGroupsCut(user *ldap.Entry, username string, kept int, reason string) {
	if reason == "" {
		return
	}
	p.log.Warn("ldap: group list cut; rules may miss groups the user is in", "username", username, "dn", user.DN,
		"groups", kept, "why", reason)
}

// fillFilter puts the escaped username and DN into a configured filter.
func fillFilter(filter, username, dn string) string {
	return strings.NewReplacer(
		placeholderUsername, ldap.EscapeFilter(username),
		placeholderDN, ldap.EscapeFilter(dn),
	).Replace(filter)
}

// passwordRefused reports whether err, a user's bind's, is the directory
// refusing the password or the account, to be read as a wrong password:
// invalid credentials (49: Active Directory's disabled, locked and expired
// accounts among them), inappropriate authentication (48), unwilling to
// perform (53: 389 Directory Server's and FreeIPA's inactivated accounts),
// and constraint violation (19), which 389 Directory Server and FreeIPA
// answer for an account their password policy locked ("Exceed password
// retry limit") before they look at the password.
func passwordRefused(err error) bool {
	return ldap.IsErrorAnyOf(err, ldap.LDAPResultInvalidCredentials, ldap.LDAPResultInappropriateAuthentication,
		ldap.LDAPResultUnwillingToPerform, ldap.LDAPResultConstraintViolation, ldap.ErrorEmptyPassword)
}

// AccountError is a password check the directory refused although the
// password was right, because of the account's state: the password expired
// or to be changed (Active Directory, or a password policy such as
// OpenLDAP's ppolicy), AD's logon hours and allowed workstations. It wraps
// ErrInvalidCredentials, so it counts as a failed login; Reason is for the
// user, who can do something about it.
type AccountError struct {
	// Code is the directory's reason: AD's data code from the bind's
	// diagnostic message (532, 773…), or the password policy's
	// (changeAfterReset, passwordExpired, graceAuthNsRemaining).
	Code   string
	Reason string
}

func (e *AccountError) Error() string {
	return fmt.Sprintf("account refused by the directory (%s): %s", e.Code, e.Reason)
}

// bindUser binds as dn to check password, asking for the password policy
// response (draft-behera-ldap-password-policy: OpenLDAP's ppolicy overlay,
// 389 Directory Server and FreeIPA answer it; Active Directory ignores the
// request, which is not critical). policy is the response, or nil.
func bindUser(c *ldap.Conn, dn, password string) (policy *ldap.ControlBeheraPasswordPolicy, err error) {
	res, err := c.SimpleBind(ldap.NewSimpleBindRequest(dn, password, []ldap.Control{ldap.NewControlBeheraPasswordPolicy()}))
	if res != nil {
		policy, _ = ldap.FindControl(res.Controls, ldap.ControlTypeBeheraPasswordPolicy).(*ldap.ControlBeheraPasswordPolicy)
	}
	return policy, err
}

// Reasons for a password policy's refusals. Portcullis cannot change
// passwords: the user does so where they usually do.
const (
	policyMustChange = "Your password was reset and must be changed before you can sign in. Change it where you usually change your password, then sign in here with the new one."
	policyExpired    = "Your password has expired. Change it where you usually change your password (or ask your administrator to reset it), then sign in here with the new one."
)

// policyAccountError is the *AccountError a password policy response
// carries, or nil. The directory sends these only for the right password:
// a bind that succeeded with changeAfterReset (an administrator set the
// password and the policy has pwdMustChange: the connection may do nothing
// but change it), or with graceAuthNsRemaining (the password expired and
// this bind used one of the grace logins, which are there to change it);
// and a bind refused with passwordExpired. Letting a grace login in would
// spend the user's grace logins, without a word, on every sign-in here
// (and on every Basic auth check), until none is left to change the
// password with. accountLocked stays "wrong username or password", as AD's
// locked accounts do.
func policyAccountError(policy *ldap.ControlBeheraPasswordPolicy) *AccountError {
	switch {
	case policy == nil:
		return nil
	case policy.Error == ldap.BeheraChangeAfterReset:
		return &AccountError{Code: "changeAfterReset", Reason: policyMustChange}
	case policy.Error == ldap.BeheraPasswordExpired:
		return &AccountError{Code: "passwordExpired", Reason: policyExpired}
	case policy.Grace >= 0:
		return &AccountError{Code: "graceAuthNsRemaining", Reason: policyExpired}
	}
	return nil
}

func (e *AccountError) Unwrap() error { return ErrInvalidCredentials }

// adDataCode finds AD's reason in a bind diagnostic such as
// "80090308: LdapErr: DSID-0C09042F, comment: AcceptSecurityContext error, data 532, v4563".
var adDataCode = regexp.MustCompile(`\bdata ([0-9a-fA-F]{3,8}),`)

// adAccountRefusals are the data codes AD sends only when the password was
// right, with what the user is told. The others (52e wrong password, 525
// unknown user, 533 disabled, 701 account expired, 775 locked) stay "wrong
// username or password": for those AD is not documented to have checked
// the password first, and telling them apart would tell a guesser more.
var adAccountRefusals = map[string]string{
	"530": "Your account may not sign in at this time. Ask your administrator about its logon hours.",
	"531": "Your account may not sign in from here. Ask your administrator about the computers it may use.",
	"532": "Your password has expired. Change it (when signing in to Windows, or on your organization's password page), then sign in here with the new one.",
	"773": "Your password must be changed before you can sign in. Change it (when signing in to Windows, or on your organization's password page), then sign in here with the new one.",
}

// adAccountError is the *AccountError an Active Directory bind refusal
// carries, or nil.
func adAccountError(err error) *AccountError {
	var le *ldap.Error
	if !errors.As(err, &le) || le.ResultCode != ldap.LDAPResultInvalidCredentials || le.Err == nil {
		return nil
	}
	m := adDataCode.FindStringSubmatch(le.Err.Error())
	if m == nil {
		return nil
	}
	code := strings.ToLower(m[1])
	reason, ok := adAccountRefusals[code]
	if !ok {
		return nil
	}
	return &AccountError{Code: code, Reason: reason}
}
