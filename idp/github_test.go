package idp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/portcullis-proxy/portcullis/test/githubapi"
)

const githubIdP = "gh"

// octocat is the fake's user: 150 addresses (two pages of 100) whose primary,
// verified address is on the second page behind verified and unverified
// others; two organisations and 130 teams (two pages).
func octocat() githubapi.User {
	u := githubapi.User{
		Login: "octocat", ID: 583231, Name: "The Octocat",
		PublicEmail: "public-but-unverified@example.com",
		Orgs:        []githubapi.Org{{Login: "cvat-ai", ID: 1}, {Login: "Portcullis-Proxy", ID: 2}},
	}
	for i := range 150 {
		u.Emails = append(u.Emails, githubapi.Email{Email: fmt.Sprintf("alias%d@example.net", i), Verified: i%2 == 0})
	}
	u.Emails[140] = githubapi.Email{Email: "octocat@github.com", Primary: true, Verified: true}
	for i := range 130 {
		u.Teams = append(u.Teams, githubapi.Team{Org: "cvat-ai", Slug: fmt.Sprintf("team-%d", i), Name: fmt.Sprintf("Team %d", i), ID: int64(100 + i)})
	}
	u.Teams[129] = githubapi.Team{Org: "Portcullis-Proxy", Slug: "maintainers", Name: "Maintainers", ID: 99}
	return u
}

// githubHarness is the fake GitHub, the proxy's public origin, and a
// provider built from the github preset pointed at the fake.
type githubHarness struct {
	gh       *githubapi.Server
	provider *oidcProvider
	public   *httptest.Server
	cfg      Config
}

func newGitHubHarness(t *testing.T, u githubapi.User, edit func(c *Config, gh *githubapi.Server), deny bool) *githubHarness {
	t.Helper()
	return newGitHubHarnessWith(t, githubapi.Options{User: u, Deny: deny}, edit)
}

// newGitHubHarnessWith is newGitHubHarness with the fake's options (its
// callback URL filled in).
func newGitHubHarnessWith(t *testing.T, so githubapi.Options, edit func(c *Config, gh *githubapi.Server)) *githubHarness {
	t.Helper()
	public := callbackCatcher(t)
	o := testOptions(public.URL, true)
	so.CallbackURL = o.CallbackURL("oidc", githubIdP, "callback")
	gh := githubapi.Start(t, so)
	c := Config{ID: githubIdP, Preset: PresetGitHub, BaseURL: gh.URL, ClientID: gh.ClientID, ClientSecret: gh.ClientSecret}
	if edit != nil {
		edit(&c, gh)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("config does not validate: %v", err)
	}
	h := &githubHarness{gh: gh, public: public, cfg: c, provider: startOIDC(t, c, o)}
	waitReady(t, h.provider, time.Second)
	return h
}

// login runs a browser from LoginURL through the authorize page to the
// callback and hands the callback to Complete.
func (h *githubHarness) login(t *testing.T) (*Profile, error) {
	t.Helper()
	p, _, err := h.loginTokens(t)
	return p, err
}

// loginTokens is login, with the tokens Complete kept.
func (h *githubHarness) loginTokens(t *testing.T) (*Profile, *Tokens, error) {
	t.Helper()
	f, cb := h.callback(t)
	return h.provider.Complete(httptest.NewRequest(http.MethodGet, cb, nil), f)
}

// callback runs a browser from LoginURL through the authorize page and
// returns the login's flow and the callback URL it ended at.
func (h *githubHarness) callback(t *testing.T) (*Flow, string) {
	t.Helper()
	f := &Flow{State: rand.Text(), IdP: githubIdP}
	start, err := h.provider.LoginURL(f)
	if err != nil {
		t.Fatalf("LoginURL: %v", err)
	}
	resp, err := newBrowser(t).Get(start)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cb := resp.Request.URL.String()
	if !strings.HasPrefix(cb, h.public.URL+"/.portcullis/oidc/"+githubIdP+"/callback?") {
		t.Fatalf("browser ended at %s, not the callback", cb)
	}
	return f, cb
}

func TestGitHubLoginEndToEnd(t *testing.T) {
	h := newGitHubHarness(t, octocat(), nil, false)
	p, err := h.login(t)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}

	t.Run("the user comes from GET /user with the numeric id as subject", func(t *testing.T) {
		if p.IdP != githubIdP || p.Sub != "583231" || p.Username != "octocat" || p.Name != "The Octocat" {
			t.Errorf("profile = %+v", p)
		}
	})
	t.Run("the primary verified email on page 2 wins over the public and the other verified addresses", func(t *testing.T) {
		if p.Email != "octocat@github.com" || !p.EmailVerified {
			t.Errorf("email = %q verified %v", p.Email, p.EmailVerified)
		}
	})
	t.Run("organisations and org/team slugs from both pages of teams are the groups", func(t *testing.T) {
		for _, g := range []string{"cvat-ai", "Portcullis-Proxy", "cvat-ai/team-0", "cvat-ai/team-99", "cvat-ai/team-128", "Portcullis-Proxy/maintainers"} {
			if !slices.Contains(p.Groups, g) {
				t.Errorf("groups lack %q", g)
			}
		}
		if len(p.Groups) != 2+130 {
			t.Errorf("got %d groups, want 132", len(p.Groups))
		}
	})
	t.Run("the API is called with GitHub's media type, API version, a User-Agent and 100 items a page", func(t *testing.T) {
		reqs := h.gh.APIRequests()
		var paths []string
		for _, r := range reqs {
			paths = append(paths, r.URL.Path+"?"+r.URL.RawQuery)
			if r.Header.Get("Accept") != "application/vnd.github+json" || r.Header.Get("X-GitHub-Api-Version") != "2022-11-28" ||
				r.Header.Get("User-Agent") == "" || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer gho_") {
				t.Errorf("%s headers = %v", r.URL, r.Header)
			}
		}
		want := []string{
			"/api/v3/user?",
			"/api/v3/user/emails?per_page=100", "/api/v3/user/emails?page=2&per_page=100",
			"/api/v3/user/orgs?per_page=100",
			"/api/v3/user/teams?per_page=100", "/api/v3/user/teams?page=2&per_page=100",
		}
		if !slices.Equal(paths, want) {
			t.Errorf("requests =\n %q\nwant\n %q", paths, want)
		}
	})
}

func TestGitHubEmailChoice(t *testing.T) {
	tests := []struct {
		name         string
		emails       []githubapi.Email
		wantEmail    string
		wantVerified bool
	}{
		{
			name: "a verified address is chosen over an unverified primary",
			emails: []githubapi.Email{
				{Email: "primary@example.com", Primary: true},
				{Email: "verified@example.com", Verified: true},
			},
			wantEmail: "verified@example.com", wantVerified: true,
		},
		{
			name: "the primary verified address wins over earlier verified ones",
			emails: []githubapi.Email{
				{Email: "first@example.com", Verified: true},
				{Email: "primary@example.com", Primary: true, Verified: true},
			},
			wantEmail: "primary@example.com", wantVerified: true,
		},
		{
			name:   "with no verified address there is no email at all, not the public one",
			emails: []githubapi.Email{{Email: "primary@example.com", Primary: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := octocat()
			u.Emails = tt.emails
			p, err := newGitHubHarness(t, u, nil, false).login(t)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if p.Email != tt.wantEmail || p.EmailVerified != tt.wantVerified {
				t.Errorf("email = %q verified %v, want %q %v", p.Email, p.EmailVerified, tt.wantEmail, tt.wantVerified)
			}
			if tt.wantEmail == "" {
				c := Config{RequireVerifiedEmail: true, Preset: PresetGitHub}
				var ae *AdmissionError
				if err := c.Admit(p); !errors.As(err, &ae) || ae.Rule != "require_verified_email" {
					t.Errorf("Admit = %v, want refusal by require_verified_email", err)
				}
			}
		})
	}
}

func TestGitHubAllowedOrganizationsAndTeams(t *testing.T) {
	h := newGitHubHarness(t, octocat(), nil, false)
	p, err := h.login(t)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	tests := []struct {
		name      string
		orgs      []string
		teams     []string
		wantAdmit bool
	}{
		{name: "a member of an allowed organisation is admitted", orgs: []string{"cvat-ai"}, wantAdmit: true},
		{name: "organisation names match case-insensitively", orgs: []string{"portcullis-proxy"}, wantAdmit: true},
		{name: "a user in none of the allowed organisations is refused", orgs: []string{"other-org"}},
		{name: "a member of an allowed team is admitted", teams: []string{"portcullis-proxy/maintainers"}, wantAdmit: true},
		{name: "a team of the right name in another organisation does not admit", teams: []string{"other-org/maintainers"}},
		{name: "either list admits", orgs: []string{"other-org"}, teams: []string{"cvat-ai/team-7"}, wantAdmit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.cfg
			c.AllowedOrganizations, c.AllowedTeams = tt.orgs, tt.teams
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			err := c.Admit(p)
			var ae *AdmissionError
			switch {
			case tt.wantAdmit && err != nil:
				t.Errorf("Admit = %v, want admitted", err)
			case !tt.wantAdmit && !errors.As(err, &ae):
				t.Errorf("Admit = %v, want an AdmissionError", err)
			case !tt.wantAdmit && !strings.Contains(ae.Reason, "GitHub"):
				t.Errorf("reason %q does not say where", ae.Reason)
			case !tt.wantAdmit && !strings.Contains(ae.Reason, "single sign-on, sign in to it on GitHub first"):
				// A member of an organisation enforcing SAML SSO without an
				// SSO session when authorizing is left out of the lists.
				t.Errorf("reason %q does not say what a member of an organisation with single sign-on does", ae.Reason)
			}
		})
	}
}

// TestGitHubSSOPartialResults: an organisation that enforces SAML single
// sign-on, which the user had no SSO session for when authorizing the app,
// is left out of /user/orgs and /user/teams with only the header
// X-GitHub-SSO: partial-results; organizations=ID to say so
// (https://docs.github.com/en/authentication/authenticating-with-single-sign-on/about-authentication-with-single-sign-on).
// The login goes on without it, and the log says why a member lacks it.
func TestGitHubSSOPartialResults(t *testing.T) {
	u := octocat()
	u.Orgs = append(u.Orgs, githubapi.Org{Login: "sso-corp", ID: 21955855, SSOUnauthorized: true})
	u.Teams = append(u.Teams, githubapi.Team{Org: "sso-corp", Slug: "admins", Name: "Admins", ID: 7})
	h := newGitHubHarness(t, u, nil, false)
	var logged bytes.Buffer
	h.provider.log = slog.New(slog.NewTextHandler(&logged, nil))
	p, err := h.login(t)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if slices.Contains(p.Groups, "sso-corp") || slices.Contains(p.Groups, "sso-corp/admins") || !slices.Contains(p.Groups, "cvat-ai") {
		t.Errorf("groups = %q, want the SSO organisation and its team left out, the others kept", p.Groups)
	}
	if line := logged.String(); !strings.Contains(line, "level=WARN") || !strings.Contains(line, "SAML single sign-on") ||
		!strings.Contains(line, "organization_ids=21955855") || !strings.Contains(line, "user=octocat") {
		t.Errorf("log = %q, want a warning naming the organisation id GitHub left out", line)
	}
}

func TestSSOPartialResults(t *testing.T) {
	for header, want := range map[string][]string{
		"partial-results; organizations=21955855,20582480":                       {"21955855", "20582480"},
		"partial-results;organizations=1":                                        {"1"},
		"required; url=https://github.com/orgs/acme/sso?authorization_request=x": nil,
		"": nil,
	} {
		if got := ssoPartialResults(header); !slices.Equal(got, want) {
			t.Errorf("ssoPartialResults(%q) = %q, want %q", header, got, want)
		}
	}
}

func TestGitHubLoginVariants(t *testing.T) {
	t.Run("github.com-style endpoints (API at the root) work as configured keys", func(t *testing.T) {
		h := newGitHubHarness(t, octocat(), func(c *Config, gh *githubapi.Server) {
			c.BaseURL = ""
			c.AuthURL, c.TokenURL = gh.URL+"/login/oauth/authorize", gh.URL+"/login/oauth/access_token"
			c.UserinfoURL = gh.URL + "/user"
		}, false)
		p, err := h.login(t)
		if err != nil || p.Email != "octocat@github.com" || len(p.Groups) != 132 {
			t.Fatalf("Complete = %+v, %v", p, err)
		}
	})
	t.Run("without read:org the organisations and teams are not read", func(t *testing.T) {
		h := newGitHubHarness(t, octocat(), func(c *Config, _ *githubapi.Server) {
			c.Scopes = []string{"read:user", "user:email"}
		}, false)
		p, err := h.login(t)
		if err != nil {
			t.Fatalf("Complete: %v", err)
		}
		if len(p.Groups) != 0 {
			t.Errorf("groups = %q, want none", p.Groups)
		}
		for _, r := range h.gh.APIRequests() {
			if strings.Contains(r.URL.Path, "/orgs") || strings.Contains(r.URL.Path, "/teams") {
				t.Errorf("requested %s without read:org", r.URL.Path)
			}
		}
	})
	t.Run("write:org and admin:org include read:org: organisations and teams are read", func(t *testing.T) {
		for _, scope := range []string{"write:org", "admin:org"} {
			h := newGitHubHarness(t, octocat(), func(c *Config, _ *githubapi.Server) {
				c.Scopes = []string{"read:user", "user:email", scope}
			}, false)
			p, err := h.login(t)
			if err != nil {
				t.Fatalf("with %s: Complete: %v", scope, err)
			}
			if len(p.Groups) != 132 {
				t.Errorf("with %s: %d groups, want 132", scope, len(p.Groups))
			}
		}
	})
	t.Run("the user scope alone lets GitHub list organisations and teams: they are read", func(t *testing.T) {
		// GET /user/orgs "requires at least user or read:org scope", GET
		// /user/teams "the user, repo, or read:org scope"
		// (https://docs.github.com/en/rest/orgs/orgs#list-organizations-for-the-authenticated-user,
		// https://docs.github.com/en/rest/teams/teams#list-teams-for-the-authenticated-user);
		// user also includes read:user and user:email.
		h := newGitHubHarness(t, octocat(), func(c *Config, _ *githubapi.Server) {
			c.Scopes = []string{"user"}
		}, false)
		p, err := h.login(t)
		if err != nil || p.Email != "octocat@github.com" || len(p.Groups) != 132 {
			t.Fatalf("Complete = %+v, %v; want the primary email and 132 groups", p, err)
		}
	})
	t.Run("a GitHub App's token, whose granted scope is always empty, reads organisations and teams", func(t *testing.T) {
		h := newGitHubHarnessWith(t, githubapi.Options{User: octocat(), GitHubApp: true}, nil)
		p, err := h.login(t)
		if err != nil || p.Email != "octocat@github.com" || len(p.Groups) != 132 {
			t.Fatalf("Complete = %+v, %v; want the primary email and 132 groups", p, err)
		}
	})
	t.Run("without user:email the emails endpoint's 404 fails the login", func(t *testing.T) {
		h := newGitHubHarness(t, octocat(), func(c *Config, _ *githubapi.Server) {
			c.Scopes = []string{"read:user"}
		}, false)
		_, err := h.login(t)
		if err == nil || !strings.Contains(err.Error(), "oidc gh: fetch emails: github GET /api/v3/user/emails: 404 Not Found") {
			t.Fatalf("Complete err = %v", err)
		}
	})
	t.Run("a user who cancels at GitHub comes back with access_denied", func(t *testing.T) {
		_, err := newGitHubHarness(t, octocat(), nil, true).login(t)
		var ce *CallbackError
		if !errors.As(err, &ce) || ce.Code != "access_denied" {
			t.Fatalf("Complete err = %v, want CallbackError access_denied", err)
		}
	})
	t.Run("a wrong client secret fails the exchange with GitHub's error code", func(t *testing.T) {
		h := newGitHubHarness(t, octocat(), func(c *Config, _ *githubapi.Server) { c.ClientSecret = "wrong" }, false)
		_, err := h.login(t)
		if err == nil || !strings.Contains(err.Error(), "exchange code") || !strings.Contains(err.Error(), "incorrect_client_credentials") {
			t.Fatalf("Complete err = %v", err)
		}
	})
	t.Run("a rate-limited API is a clear error with the reset time", func(t *testing.T) {
		h := newGitHubHarness(t, octocat(), nil, false)
		h.gh.SetRateLimited(true)
		_, err := h.login(t)
		var ge *GitHubAPIError
		if !errors.As(err, &ge) || !ge.RateLimited || ge.Status != http.StatusForbidden || ge.Reset.Before(time.Now()) {
			t.Fatalf("Complete err = %v, want a rate-limit GitHubAPIError", err)
		}
		if !strings.Contains(err.Error(), "oidc gh: fetch user: github GET /api/v3/user: rate limit exceeded (403 API rate limit exceeded for user ID 583231.), resets at ") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestGitHubClaimsWithABadToken(t *testing.T) {
	gh := githubapi.Start(t, githubapi.Options{CallbackURL: "http://127.0.0.1/cb", User: octocat()})
	p := &oidcProvider{cfg: Config{ID: githubIdP, Preset: PresetGitHub, UserinfoURL: gh.URL + "/user"}, client: gh.Client()}
	_, err := p.oauth2Claims(context.Background(), &oauth2.Token{AccessToken: "gho_revoked", TokenType: "bearer"})
	if err == nil || err.Error() != "oidc gh: fetch user: github GET /user: the access token was refused (401 Bad credentials)" {
		t.Fatalf("err = %v", err)
	}
}

// TestGitHubAPIErrorAnswers: an answer other than 200 is never read as the
// user, and GitHub's secondary rate limit, which says when to retry only in
// Retry-After, is reported as a rate limit with that time.
func TestGitHubAPIErrorAnswers(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		retryAfter  string
		rateLimited bool
	}{
		{name: "a 202 answer with a user in it is an error", status: http.StatusAccepted},
		{name: "a secondary rate limit (403 with Retry-After) is a rate limit", status: http.StatusForbidden, retryAfter: "120", rateLimited: true},
		{name: "429 with Retry-After is a rate limit", status: http.StatusTooManyRequests, retryAfter: "120", rateLimited: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, `{"login":"octocat","id":583231,"message":"You have exceeded a secondary rate limit."}`)
			}))
			t.Cleanup(api.Close)
			p := &oidcProvider{cfg: Config{ID: githubIdP, Preset: PresetGitHub, UserinfoURL: api.URL + "/user"}, client: api.Client()}
			before := time.Now()
			claims, err := p.oauth2Claims(context.Background(), &oauth2.Token{AccessToken: "gho_x", TokenType: "bearer"})
			var ge *GitHubAPIError
			if !errors.As(err, &ge) || ge.Status != tt.status || ge.RateLimited != tt.rateLimited {
				t.Fatalf("claims = %v, err = %v (%#v), want a GitHubAPIError %d rate-limited=%v", claims, err, ge, tt.status, tt.rateLimited)
			}
			if tt.rateLimited && ge.Reset.Before(before.Add(time.Minute)) {
				t.Errorf("Reset = %v, want about two minutes after %v (Retry-After: %s)", ge.Reset, before, tt.retryAfter)
			}
		})
	}
}

func TestGitHubNextPage(t *testing.T) {
	gh := githubClient{api: "https://api.github.com"}
	tests := []struct {
		name, link, want string
		wantErr          bool
	}{
		{name: "no Link header is the last page", link: ""},
		{
			name: "rel=next is followed",
			link: `<https://api.github.com/user/emails?page=2>; rel="next", <https://api.github.com/user/emails?page=5>; rel="last"`,
			want: "https://api.github.com/user/emails?page=2",
		},
		{
			name: "the last page has prev and first only",
			link: `<https://api.github.com/user/emails?page=4>; rel="prev", <https://api.github.com/user/emails?page=1>; rel="first"`,
		},
		{
			name:    "a next link to another host is refused: the token would go with it",
			link:    `<https://evil.example/user/emails?page=2>; rel="next"`,
			wantErr: true,
		},
		{
			name:    "a next link to plain http on the API's host is refused: the token would cross unencrypted",
			link:    `<http://api.github.com/user/emails?page=2>; rel="next"`,
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := gh.nextPage(tt.link)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("nextPage = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// Each GitHub API answer is read up to 4 MiB, and one larger is refused as
// such, not cut at 4 MiB and decoded. A name of 3 MiB is within it; GET
// /user with one of 5 MiB is not.
func TestGitHubAnswersAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		refused bool
	}{
		{"a 3 MiB answer is read", 3 << 20, false},
		{"a 5 MiB answer is refused", 5 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := octocat()
			u.Name = strings.Repeat("x", tc.size)
			p, err := newGitHubHarness(t, u, nil, false).login(t)
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), "github GET /api/v3/user: the answer is larger than 4194304 bytes")):
				t.Errorf("login = %v; want GET /user refused as larger than 4 MiB", err)
			case !tc.refused && (err != nil || p.Username != "octocat"):
				t.Errorf("login = %v; want octocat signed in", err)
			}
		})
	}
}

// A login reads at most 20 pages of one list (2,000 teams at 100 a page),
// and a list longer than that fails the login rather than being cut short:
// a cut list of teams is a user in fewer groups than GitHub says.
func TestGitHubListsAreReadToTwentyPages(t *testing.T) {
	for _, tc := range []struct {
		name    string
		teams   int
		refused bool
	}{
		{"2,000 teams, 20 pages, are all read", 2000, false},
		{"2,001 teams, 21 pages, fail the login", 2001, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := octocat()
			u.Teams = nil
			for i := range tc.teams {
				u.Teams = append(u.Teams, githubapi.Team{Org: "cvat-ai", Slug: fmt.Sprintf("team-%d", i), Name: fmt.Sprintf("Team %d", i), ID: int64(100 + i)})
			}
			h := newGitHubHarness(t, u, nil, false)
			p, err := h.login(t)
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), "oidc gh: fetch teams: github GET /user/teams: more than 20 pages")):
				t.Errorf("login = %v; want the teams refused as more than 20 pages", err)
			case !tc.refused && (err != nil || len(p.Groups) != 2+tc.teams):
				t.Errorf("login = %v; want %d groups", err, 2+tc.teams)
			}
			pages := 0
			for _, r := range h.gh.APIRequests() {
				if strings.HasSuffix(r.URL.Path, "/user/teams") {
					pages++
				}
			}
			if pages > 20 {
				t.Errorf("read %d pages of teams, want at most 20", pages)
			}
		})
	}
}

// A next link to another origin fails the login and is not followed: the
// token would go with it, and stopping there instead would give the user
// only the first page of their groups.
func TestGitHubListRefusesANextPageOffTheAPIOrigin(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Write([]byte(`[]`))
	}))
	t.Cleanup(other.Close)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", fmt.Sprintf(`<%s/user/teams?page=2>; rel="next"`, other.URL))
		w.Write([]byte(`[{"slug": "admins", "organization": {"login": "cvat-ai"}}]`))
	}))
	t.Cleanup(api.Close)
	gh := githubClient{client: api.Client(), token: &oauth2.Token{AccessToken: "gho_x", TokenType: "bearer"}, api: api.URL}
	teams, _, err := githubList[githubTeam](context.Background(), gh, "/user/teams")
	if err == nil || err.Error() != "github GET /user/teams: next page link leaves the API's origin" {
		t.Errorf("githubList = %v, %v; want the next page refused as leaving the API's origin", teams, err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the other origin got %d requests", n)
	}
}

// TestGitHubTokenEndpointErrors: GitHub's token endpoint answers its errors
// with status 200 and codes of its own
// (https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors):
// bad_verification_code where RFC 6749 says invalid_grant, and, for a
// GitHub App's refresh token that is spent, expired or revoked,
// bad_refresh_token. They must count as those.
func TestGitHubTokenEndpointErrors(t *testing.T) {
	t.Run("a code spent already is the browser's doing, not a set-up error", func(t *testing.T) {
		h := newGitHubHarness(t, octocat(), nil, false)
		f, cb := h.callback(t)
		if _, _, err := h.provider.Complete(httptest.NewRequest(http.MethodGet, cb, nil), f); err != nil {
			t.Fatalf("first Complete: %v", err)
		}
		_, _, err := h.provider.Complete(httptest.NewRequest(http.MethodGet, cb, nil), f)
		if err == nil || !strings.Contains(err.Error(), "bad_verification_code") {
			t.Fatalf("second Complete err = %v, want GitHub's bad_verification_code", err)
		}
		if se, ok := errors.AsType[*SetupError](err); ok {
			t.Errorf("a replayed code is a set-up error (%s: %s)", se.Reason, se.Hint)
		}
	})
	t.Run("a wrong client secret is invalid_client's set-up error", func(t *testing.T) {
		h := newGitHubHarness(t, octocat(), func(c *Config, _ *githubapi.Server) { c.ClientSecret = "wrong" }, false)
		_, err := h.login(t)
		if se, ok := errors.AsType[*SetupError](err); !ok || se.Reason != "invalid_client" {
			t.Fatalf("Complete err = %v, want the set-up error invalid_client", err)
		}
	})
	t.Run("a GitHub App's refresh rotates the token, and a spent or revoked one ends the session", func(t *testing.T) {
		h := newGitHubHarnessWith(t, githubapi.Options{User: octocat(), GitHubApp: true}, nil)
		_, old, err := h.loginTokens(t)
		if err != nil || old.RefreshToken == "" {
			t.Fatalf("Complete = %+v, %v; want a refresh token", old, err)
		}
		p, next, err := h.provider.Refresh(context.Background(), old)
		if err != nil || p == nil || p.Email != "octocat@github.com" || next.RefreshToken == old.RefreshToken {
			t.Fatalf("Refresh = %+v, %+v, %v; want octocat anew with a new refresh token", p, next, err)
		}
		if _, _, err := h.provider.Refresh(context.Background(), old); !errors.Is(err, ErrRefreshRefused) {
			t.Errorf("Refresh with the spent token: err = %v, want ErrRefreshRefused", err)
		}
		h.gh.RevokeGrants()
		if _, _, err := h.provider.Refresh(context.Background(), next); !errors.Is(err, ErrRefreshRefused) {
			t.Errorf("Refresh after the user revoked the app: err = %v, want ErrRefreshRefused", err)
		}
	})
}
