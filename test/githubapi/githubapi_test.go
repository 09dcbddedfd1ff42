package githubapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestAnswersAsGitHubDoes(t *testing.T) {
	s := Start(t, Options{CallbackURL: "http://127.0.0.1:1/cb", User: User{Login: "octocat", ID: 1,
		Emails: []Email{{Email: "a@example.com", Primary: true, Verified: true}}}})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	code := func(t *testing.T) string {
		t.Helper()
		resp, err := noRedirect.Get(s.URL + "/login/oauth/authorize?client_id=" + s.ClientID + "&scope=read:user%20user:email&state=xyz")
		if err != nil {
			t.Fatal(err)
		}
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || loc.Query().Get("state") != "xyz" || loc.Query().Get("code") == "" {
			t.Fatalf("authorize = %d %s", resp.StatusCode, loc)
		}
		return loc.Query().Get("code")
	}
	exchange := func(t *testing.T, accept, code string) (string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/login/oauth/access_token", strings.NewReader(url.Values{
			"client_id": {s.ClientID}, "client_secret": {s.ClientSecret}, "code": {code}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("access_token status %d", resp.StatusCode)
		}
		return resp.Header.Get("Content-Type"), string(body)
	}

	t.Run("the token answer is form-encoded without Accept, with the granted scopes comma-separated", func(t *testing.T) {
		ct, body := exchange(t, "", code(t))
		v, _ := url.ParseQuery(body)
		if ct != "application/x-www-form-urlencoded; charset=utf-8" || !strings.HasPrefix(v.Get("access_token"), "gho_") ||
			v.Get("scope") != "read:user,user:email" || v.Get("token_type") != "bearer" {
			t.Errorf("%s: %s", ct, body)
		}
	})
	t.Run("the token answer is JSON with Accept: application/json", func(t *testing.T) {
		ct, body := exchange(t, "application/json", code(t))
		var m map[string]string
		if err := json.Unmarshal([]byte(body), &m); err != nil || !strings.HasPrefix(ct, "application/json") || m["token_type"] != "bearer" {
			t.Errorf("%s: %s (%v)", ct, body, err)
		}
	})
	t.Run("a used code is a 200 answer carrying bad_verification_code", func(t *testing.T) {
		c := code(t)
		exchange(t, "", c)
		_, body := exchange(t, "application/json", c)
		if !strings.Contains(body, `"error":"bad_verification_code"`) {
			t.Errorf("body = %s", body)
		}
	})

	get := func(t *testing.T, path, token, ua string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
		req.Header.Set("User-Agent", ua)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	t.Run("a bad token is 401 Bad credentials", func(t *testing.T) {
		resp, body := get(t, "/user", "gho_nope", "test")
		if resp.StatusCode != 401 || !strings.Contains(body, `"message": "Bad credentials"`) {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("a request without User-Agent is 403", func(t *testing.T) {
		resp, _ := get(t, "/user", s.IssueToken("read:user"), "")
		if resp.StatusCode != 403 {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("/user/emails without user:email is 404 naming the scopes it accepts", func(t *testing.T) {
		resp, _ := get(t, "/api/v3/user/emails", s.IssueToken("read:user"), "test")
		if resp.StatusCode != 404 || resp.Header.Get("X-Accepted-OAuth-Scopes") != "user, user:email" {
			t.Errorf("status %d, X-Accepted-OAuth-Scopes %q", resp.StatusCode, resp.Header.Get("X-Accepted-OAuth-Scopes"))
		}
	})
	t.Run("/user/orgs without read:org or user is 403 with GitHub's message", func(t *testing.T) {
		resp, body := get(t, "/user/orgs", s.IssueToken("read:user", "user:email"), "test")
		if resp.StatusCode != 403 || !strings.Contains(body, `"message": "You need at least read:org scope or user scope to list your organizations."`) {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
		if resp, _ := get(t, "/user/orgs", s.IssueToken("user"), "test"); resp.StatusCode != 200 {
			t.Errorf("with the user scope: status %d", resp.StatusCode)
		}
	})
	t.Run("emails have GitHub's fields", func(t *testing.T) {
		resp, body := get(t, "/user/emails", s.IssueToken("user:email"), "test")
		var got []map[string]any
		json.Unmarshal([]byte(body), &got)
		if resp.StatusCode != 200 || len(got) != 1 || got[0]["email"] != "a@example.com" || got[0]["primary"] != true ||
			got[0]["verified"] != true || got[0]["visibility"] != "private" || resp.Header.Get("X-RateLimit-Remaining") == "" {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("pages carry next and last links, later pages prev and first", func(t *testing.T) {
		s.o.User.Teams = make([]Team, 35)
		for i := range s.o.User.Teams {
			s.o.User.Teams[i] = Team{Org: "o", Slug: "t", ID: int64(i)}
		}
		token := s.IssueToken("read:org")
		resp, _ := get(t, "/user/teams", token, "test")
		want := `<` + s.URL + `/user/teams?page=2>; rel="next", <` + s.URL + `/user/teams?page=2>; rel="last"`
		if resp.Header.Get("Link") != want {
			t.Errorf("Link = %s\nwant   %s", resp.Header.Get("Link"), want)
		}
		resp, body := get(t, "/user/teams?page=2", token, "test")
		var got []any
		json.Unmarshal([]byte(body), &got)
		if len(got) != 5 || !strings.Contains(resp.Header.Get("Link"), `rel="first"`) || strings.Contains(resp.Header.Get("Link"), `rel="next"`) {
			t.Errorf("page 2: %d items, Link %s", len(got), resp.Header.Get("Link"))
		}
	})
	t.Run("an organisation enforcing SAML SSO that the token is not authorized for is left out of orgs and teams, named in X-GitHub-SSO", func(t *testing.T) {
		s.o.User.Orgs = []Org{{Login: "open", ID: 7}, {Login: "sso-a", ID: 21955855, SSOUnauthorized: true}, {Login: "sso-b", ID: 20582480, SSOUnauthorized: true}}
		s.o.User.Teams = []Team{{Org: "open", Slug: "devs", ID: 1}, {Org: "sso-a", Slug: "admins", ID: 2}}
		token := s.IssueToken("read:org")
		const want = "partial-results; organizations=21955855,20582480"
		resp, body := get(t, "/user/orgs", token, "test")
		var orgs []map[string]any
		json.Unmarshal([]byte(body), &orgs)
		if len(orgs) != 1 || orgs[0]["login"] != "open" || resp.Header.Get("X-GitHub-SSO") != want {
			t.Errorf("orgs: X-GitHub-SSO %q, %s", resp.Header.Get("X-GitHub-SSO"), body)
		}
		resp, body = get(t, "/user/teams", token, "test")
		var teams []struct {
			Slug         string
			Organization struct {
				Login string
				ID    int64
			}
		}
		json.Unmarshal([]byte(body), &teams)
		if len(teams) != 1 || teams[0].Slug != "devs" || teams[0].Organization.ID != 7 || resp.Header.Get("X-GitHub-SSO") != want {
			t.Errorf("teams: X-GitHub-SSO %q, %+v", resp.Header.Get("X-GitHub-SSO"), teams)
		}
	})
}
