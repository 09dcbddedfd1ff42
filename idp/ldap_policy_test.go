package idp

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// TestLDAPPasswordPolicy logs in at a slapd with the ppolicy overlay. A
// password policy answers the bind with what the account's password is
// (reset, expired, in its grace logins, expiring soon); the bind of a
// reset password succeeds, so only the response tells the login to stop.
// Those that must be changed first are refused with a reason the user is
// shown, and only for the right password.
func TestLDAPPasswordPolicy(t *testing.T) {
	srv := ldapserver.Start(t, ldapserver.Options{PasswordPolicy: true})
	policy := func(cn, attrs string) string {
		return fmt.Sprintf("dn: cn=%s,%s\nobjectClass: organizationalRole\nobjectClass: pwdPolicy\ncn: %s\npwdAttribute: userPassword\n%s\n",
			cn, ldapserver.PoliciesDN, cn, attrs)
	}
	user := func(uid, policyCN string) string {
		return fmt.Sprintf("dn: %s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nuserPassword: %s\npwdPolicySubentry: cn=%s,%s\n\n",
			ldapserver.UserDN(uid), uid, uid, uid, ldapserver.SSHA(uid+"-pw"), policyCN, ldapserver.PoliciesDN)
	}
	srv.Add(t, policy("expired", "pwdMaxAge: 1\n")+policy("grace", "pwdMaxAge: 1\npwdGraceAuthNLimit: 3\n")+
		policy("warned", "pwdMaxAge: 3600\npwdExpireWarning: 3600\n")+
		user("erin", "expired")+user("frank", "grace")+user("grace", "warned"))
	// pwdChangedTime is in whole seconds, and a password is expired once
	// more than pwdMaxAge (1 s) has passed since.
	expiredFrom := time.Now().Truncate(time.Second).Add(2*time.Second + 50*time.Millisecond)
	// An administrator's reset: the default policy has pwdMustChange.
	srv.Modify(t, "dn: "+ldapserver.UserDN(ldapserver.Bob)+"\nchangetype: modify\nreplace: userPassword\nuserPassword: reset-pw\n")
	time.Sleep(time.Until(expiredFrom))

	p, logs := newLoggedLDAP(t, ldapTestConfig(srv.URL))
	tests := []struct {
		name, user, password string
		wantCode             string // "" with wantLogin: signs in; else ErrInvalidCredentials
		wantLogin            bool
		wantReason           string
	}{
		{"a password reset by the administrator must be changed first", ldapserver.Bob, "reset-pw", "changeAfterReset", false, "must be changed"},
		{"the password before the reset is just wrong", ldapserver.Bob, ldapserver.BobPassword, "", false, ""},
		{"an expired password is refused as expired", "erin", "erin-pw", "passwordExpired", false, "has expired"},
		{"a wrong password on an expired account says nothing of the expiry", "erin", "wrong", "", false, ""},
		{"an expired password with grace logins left is refused as expired", "frank", "frank-pw", "graceAuthNsRemaining", false, "has expired"},
		{"a password that expires soon signs in", "grace", "grace-pw", "", true, ""},
		{"a password under the default policy signs in", ldapserver.Alice, ldapserver.AlicePassword, "", true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prof, err := p.Authenticate(httptest.NewRequest("POST", "/", nil), tc.user, tc.password, nil)
			if tc.wantLogin {
				if err != nil || prof.Username != tc.user {
					t.Fatalf("got %+v, %v; want %s signed in", prof, err, tc.user)
				}
				return
			}
			if !errors.Is(err, ErrInvalidCredentials) || prof != nil {
				t.Fatalf("got %+v, %v; want a refusal that counts as a failed login", prof, err)
			}
			var acct *AccountError
			switch {
			case tc.wantCode == "" && errors.As(err, &acct):
				t.Errorf("got %v, want no account error (it would tell the password was right)", err)
			case tc.wantCode != "" && (!errors.As(err, &acct) || acct.Code != tc.wantCode || !strings.Contains(acct.Reason, tc.wantReason)):
				t.Errorf("got %v, want code %s and a reason saying %q", err, tc.wantCode, tc.wantReason)
			}
		})
	}
	if line := logs.String(); !strings.Contains(line, "password expires soon") || !strings.Contains(line, "uid=grace,") {
		t.Errorf("no log line about grace's expiring password:\n%s", line)
	}
}
