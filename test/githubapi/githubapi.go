// Package githubapi is a local stand-in for github.com for tests: the OAuth
// app (or GitHub App) web flow (/login/oauth/authorize and
// /login/oauth/access_token) and the
// REST API endpoints a login reads (/user, /user/emails, /user/orgs,
// /user/teams), answering with the status codes, headers, JSON field names
// and shapes, Link pagination and error bodies of GitHub's public REST API
// documentation (API version 2022-11-28).
//
// The API is served both at the root (as api.github.com serves it) and
// under /api/v3 (as GitHub Enterprise Server does), so a client can be
// pointed at it either way. The authorize endpoint plays a user who has
// signed in and approves the app at once (or, with Deny, refuses it).
package githubapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// User is the account that signs in at the fake.
type User struct {
	Login string
	ID    int64
	Name  string
	// PublicEmail is the profile's public email (null when empty), which
	// GitHub shows whether or not it is verified.
	PublicEmail string
	Emails      []Email
	Orgs        []Org
	Teams       []Team
}

// Email is one of the user's addresses, as GET /user/emails lists it.
type Email struct {
	Email    string
	Primary  bool
	Verified bool
}

// Org is an organisation the user belongs to.
type Org struct {
	Login string
	ID    int64
	// SSOUnauthorized makes it an organisation that enforces SAML single
	// sign-on, for which the user had no active SSO session when they
	// authorized the app: the token may not read it, so the lists of
	// organisations and teams leave it and its teams out, and name its id
	// in X-GitHub-SSO: partial-results
	// (https://docs.github.com/en/authentication/authenticating-with-single-sign-on/about-authentication-with-single-sign-on,
	// https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api).
	SSOUnauthorized bool
}

// Team is a team the user belongs to, in the organisation Org (a login).
type Team struct {
	Org  string
	Slug string
	Name string
	ID   int64
}

// Options configure the fake's one OAuth app and its user.
type Options struct {
	// ClientID and ClientSecret default to "Iv1.portcullis" and "portcullis-secret".
	ClientID     string
	ClientSecret string
	// CallbackURL is the app's registered authorization callback URL; a
	// redirect_uri must be it or below it.
	CallbackURL string
	User        User
	// Deny makes the user press Cancel at the authorize page.
	Deny bool
	// GitHubApp makes the client a GitHub App rather than an OAuth app: its
	// user access tokens (ghu_) carry no scopes, the token answer's scope is
	// always empty, and what the token may read is the app's permissions,
	// here Email addresses and Members (read).
	GitHubApp bool
}

// Server is a running fake.
type Server struct {
	*httptest.Server
	ClientID     string
	ClientSecret string

	o  Options
	mu sync.Mutex
	// codes, tokens and refresh map what the fake issued to the grant behind it.
	codes       map[string]grant
	tokens      map[string]grant
	refresh     map[string]grant
	rateLimited bool
	requests    []*http.Request
}

type grant struct {
	// app marks a GitHub App's user access token: permissions, not scopes.
	app         bool
	scopes      []string
	redirectURI string
	challenge   string
}

// Start runs the fake until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	s := &Server{o: o, codes: map[string]grant{}, tokens: map[string]grant{}, refresh: map[string]grant{}}
	s.ClientID, s.ClientSecret = o.ClientID, o.ClientSecret
	if s.ClientID == "" {
		s.ClientID = "Iv1.portcullis"
	}
	if s.ClientSecret == "" {
		s.ClientSecret = "portcullis-secret"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login/oauth/authorize", s.authorize)
	mux.HandleFunc("POST /login/oauth/access_token", s.accessToken)
	for _, prefix := range []string{"", "/api/v3"} {
		mux.HandleFunc("GET "+prefix+"/user", s.api(s.user))
		mux.HandleFunc("GET "+prefix+"/user/emails", s.api(s.emails))
		mux.HandleFunc("GET "+prefix+"/user/orgs", s.api(s.orgs))
		mux.HandleFunc("GET "+prefix+"/user/teams", s.api(s.teams))
	}
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// IssueToken returns a valid access token with scopes, as if the web flow
// had granted it.
func (s *Server) IssueToken(scopes ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	token := "gho_" + randomHex(18)
	s.tokens[token] = grant{scopes: scopes}
	return token
}

// SetRateLimited makes every API call answer 403 with
// X-RateLimit-Remaining: 0, as GitHub does when the primary limit is spent.
func (s *Server) SetRateLimited(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimited = on
}

// APIRequests returns the API requests received so far (method, URL and
// headers; bodies are not kept).
func (s *Server) APIRequests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// authorize is GET /login/oauth/authorize for a signed-in user who approves.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != s.ClientID {
		// GitHub shows its 404 page for an unknown app.
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		redirect = s.o.CallbackURL
	}
	back := func(target string, params url.Values) {
		if state := q.Get("state"); state != "" {
			params.Set("state", state)
		}
		u, _ := url.Parse(target)
		u.RawQuery = params.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	if !underCallback(redirect, s.o.CallbackURL) {
		back(s.o.CallbackURL, url.Values{
			"error":             {"redirect_uri_mismatch"},
			"error_description": {"The redirect_uri MUST match the registered callback URL for this application."},
			"error_uri":         {"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch"},
		})
		return
	}
	if s.o.Deny {
		back(redirect, url.Values{
			"error":             {"access_denied"},
			"error_description": {"The user has denied your application access."},
			"error_uri":         {"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied"},
		})
		return
	}
	if m := q.Get("code_challenge_method"); q.Get("code_challenge") != "" && m != "S256" {
		http.Error(w, "code_challenge_method must be S256", http.StatusBadRequest)
		return
	}
	// Scopes are space-separated in the request (commas are accepted too);
	// a GitHub App ignores them.
	scopes := strings.FieldsFunc(q.Get("scope"), func(r rune) bool { return r == ' ' || r == ',' })
	if s.o.GitHubApp {
		scopes = nil
	}
	code := randomHex(10)
	s.mu.Lock()
	s.codes[code] = grant{app: s.o.GitHubApp, scopes: scopes, redirectURI: redirect, challenge: q.Get("code_challenge")}
	s.mu.Unlock()
	back(redirect, url.Values{"code": {code}})
}

// underCallback reports whether redirect is the callback URL or below it
// (same scheme, host and port; a subdirectory of its path).
func underCallback(redirect, callback string) bool {
	r, err1 := url.Parse(redirect)
	c, err2 := url.Parse(callback)
	if err1 != nil || err2 != nil || r.Scheme != c.Scheme || r.Host != c.Host {
		return false
	}
	return r.Path == c.Path || strings.HasPrefix(r.Path, strings.TrimSuffix(c.Path, "/")+"/")
}

// accessToken is POST /login/oauth/access_token. As on GitHub, errors are
// answered with status 200 and an error field, and the format follows the
// Accept header: JSON for application/json, else form-encoded.
func (s *Server) accessToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	reply := func(v url.Values) {
		if strings.Contains(r.Header.Get("Accept"), "application/json") {
			m := map[string]string{}
			for k := range v {
				m[k] = v.Get(k)
			}
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			json.NewEncoder(w).Encode(m)
			return
		}
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		fmt.Fprint(w, v.Encode())
	}
	fail := func(code, description, anchor string) {
		reply(url.Values{
			"error":             {code},
			"error_description": {description},
			"error_uri":         {"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#" + anchor},
		})
	}
	if r.PostForm.Get("client_id") != s.ClientID || r.PostForm.Get("client_secret") != s.ClientSecret {
		fail("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.", "incorrect-client-credentials")
		return
	}
	if r.PostForm.Get("grant_type") == "refresh_token" {
		s.refreshToken(r.PostForm.Get("refresh_token"), reply, fail)
		return
	}
	s.mu.Lock()
	g, ok := s.codes[r.PostForm.Get("code")]
	delete(s.codes, r.PostForm.Get("code"))
	s.mu.Unlock()
	if !ok || !pkceMatches(g.challenge, r.PostForm.Get("code_verifier")) {
		fail("bad_verification_code", "The code passed is incorrect or expired.", "bad-verification-code")
		return
	}
	if uri := r.PostForm.Get("redirect_uri"); uri != "" && uri != g.redirectURI {
		fail("redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.", "redirect-uri-mismatch2")
		return
	}
	if g.app {
		reply(s.appTokens(g))
		return
	}
	token := "gho_" + randomHex(18)
	s.mu.Lock()
	s.tokens[token] = g
	s.mu.Unlock()
	reply(url.Values{"access_token": {token}, "scope": {strings.Join(g.scopes, ",")}, "token_type": {"bearer"}})
}

// appTokens issues a GitHub App's user access token, which expires and
// comes with a refresh token; its scope is always the empty string.
func (s *Server) appTokens(g grant) url.Values {
	token, refresh := "ghu_"+randomHex(18), "ghr_"+randomHex(30)
	s.mu.Lock()
	s.tokens[token] = g
	s.refresh[refresh] = g
	s.mu.Unlock()
	return url.Values{"access_token": {token}, "expires_in": {"28800"}, "refresh_token": {refresh},
		"refresh_token_expires_in": {"15811200"}, "scope": {""}, "token_type": {"bearer"}}
}

// refreshToken is the refresh_token grant of a GitHub App's user access
// token: a new access token and a new refresh token, the one spent no
// longer working
// (https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens).
// A refresh token that is unknown, spent or revoked is answered, like the
// other errors of this endpoint, with status 200 and the error code
// bad_refresh_token.
func (s *Server) refreshToken(refresh string, reply func(url.Values), fail func(code, description, anchor string)) {
	s.mu.Lock()
	g, ok := s.refresh[refresh]
	delete(s.refresh, refresh)
	s.mu.Unlock()
	if !ok {
		fail("bad_refresh_token", "The refresh token passed is incorrect or expired.", "bad-refresh-token")
		return
	}
	reply(s.appTokens(g))
}

// RevokeGrants revokes every token the fake issued, as a user does who
// revokes the app at Settings, Applications.
func (s *Server) RevokeGrants() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
	clear(s.refresh)
}

func pkceMatches(challenge, verifier string) bool {
	if challenge == "" {
		return true
	}
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:]) == challenge
}

// api wraps a REST endpoint with what every GitHub API answer has: the
// User-Agent requirement, token authentication, rate-limit headers and the
// JSON content type.
func (s *Server) api(h func(w http.ResponseWriter, r *http.Request, g grant)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.Clone(r.Context()))
		limited := s.rateLimited
		s.mu.Unlock()

		if r.Header.Get("User-Agent") == "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.\n")
			return
		}
		h2 := w.Header()
		h2.Set("Content-Type", "application/json; charset=utf-8")
		h2.Set("X-GitHub-Media-Type", "github.v3; format=json")
		h2.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
		reset := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)

		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok {
			token, ok = strings.CutPrefix(auth, "token ")
		}
		if !ok {
			writeJSON(w, http.StatusUnauthorized, apiError{"Requires authentication", "https://docs.github.com/rest/users/users#get-the-authenticated-user", "401"})
			return
		}
		s.mu.Lock()
		g, known := s.tokens[token]
		s.mu.Unlock()
		if !known {
			writeJSON(w, http.StatusUnauthorized, apiError{"Bad credentials", "https://docs.github.com/rest", "401"})
			return
		}
		h2.Set("X-OAuth-Scopes", strings.Join(g.scopes, ", "))
		h2.Set("X-RateLimit-Limit", "5000")
		h2.Set("X-RateLimit-Reset", reset)
		h2.Set("X-RateLimit-Resource", "core")
		if limited {
			h2.Set("X-RateLimit-Remaining", "0")
			h2.Set("X-RateLimit-Used", "5000")
			writeJSON(w, http.StatusForbidden, apiError{
				fmt.Sprintf("API rate limit exceeded for user ID %d.", s.o.User.ID),
				"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api", "403"})
			return
		}
		h2.Set("X-RateLimit-Remaining", "4999")
		h2.Set("X-RateLimit-Used", "1")
		h(w, r, g)
	}
}

// apiError is GitHub's error body.
type apiError struct {
	Message          string `json:"message"`
	DocumentationURL string `json:"documentation_url"`
	Status           string `json:"status"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// hasScope reports whether g may call an endpoint that needs one of scopes:
// a GitHub App's token may (its permissions are the ones the endpoints need).
func hasScope(g grant, scopes ...string) bool {
	if g.app {
		return true
	}
	return slices.ContainsFunc(g.scopes, func(s string) bool { return slices.Contains(scopes, s) })
}

// apiBase is the origin and prefix the request came in under, for the URLs
// in answers.
func apiBase(r *http.Request) string {
	prefix := ""
	if strings.HasPrefix(r.URL.Path, "/api/v3/") {
		prefix = "/api/v3"
	}
	return "http://" + r.Host + prefix
}

// user is GET /user: the authenticated user, private fields included.
func (s *Server) user(w http.ResponseWriter, r *http.Request, g grant) {
	u, base := s.o.User, apiBase(r)
	var email any
	if u.PublicEmail != "" {
		email = u.PublicEmail
	}
	var name any
	if u.Name != "" {
		name = u.Name
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"login":                     u.Login,
		"id":                        u.ID,
		"node_id":                   "MDQ6VXNlcj" + strconv.FormatInt(u.ID, 10),
		"avatar_url":                "https://github.com/images/error/" + u.Login + "_happy.gif",
		"gravatar_id":               "",
		"url":                       base + "/users/" + u.Login,
		"html_url":                  "https://github.com/" + u.Login,
		"followers_url":             base + "/users/" + u.Login + "/followers",
		"following_url":             base + "/users/" + u.Login + "/following{/other_user}",
		"gists_url":                 base + "/users/" + u.Login + "/gists{/gist_id}",
		"starred_url":               base + "/users/" + u.Login + "/starred{/owner}{/repo}",
		"subscriptions_url":         base + "/users/" + u.Login + "/subscriptions",
		"organizations_url":         base + "/users/" + u.Login + "/orgs",
		"repos_url":                 base + "/users/" + u.Login + "/repos",
		"events_url":                base + "/users/" + u.Login + "/events{/privacy}",
		"received_events_url":       base + "/users/" + u.Login + "/received_events",
		"type":                      "User",
		"site_admin":                false,
		"name":                      name,
		"company":                   nil,
		"blog":                      "",
		"location":                  nil,
		"email":                     email,
		"hireable":                  nil,
		"bio":                       nil,
		"twitter_username":          nil,
		"public_repos":              2,
		"public_gists":              1,
		"followers":                 20,
		"following":                 0,
		"created_at":                "2008-01-14T04:33:35Z",
		"updated_at":                "2008-01-14T04:33:35Z",
		"private_gists":             81,
		"total_private_repos":       100,
		"owned_private_repos":       100,
		"disk_usage":                10000,
		"collaborators":             8,
		"two_factor_authentication": true,
		"plan": map[string]any{
			"name": "Medium", "space": 400, "private_repos": 20, "collaborators": 0,
		},
	})
}

// emails is GET /user/emails; it needs the user:email (or user) scope and
// answers 404 without it, as GitHub does, naming both scopes in
// X-Accepted-OAuth-Scopes.
func (s *Server) emails(w http.ResponseWriter, r *http.Request, g grant) {
	if !hasScope(g, "user:email", "user") {
		w.Header().Set("X-Accepted-OAuth-Scopes", "user, user:email")
		writeJSON(w, http.StatusNotFound, apiError{"Not Found", "https://docs.github.com/rest/users/emails#list-email-addresses-for-the-authenticated-user", "404"})
		return
	}
	items := make([]any, len(s.o.User.Emails))
	for i, e := range s.o.User.Emails {
		var visibility any
		if e.Primary {
			visibility = "private"
		}
		items[i] = map[string]any{"email": e.Email, "primary": e.Primary, "verified": e.Verified, "visibility": visibility}
	}
	paginate(w, r, items)
}

// orgs is GET /user/orgs; it needs the read:org (or a broader org) or user
// scope and answers 403 without it, as GitHub does.
func (s *Server) orgs(w http.ResponseWriter, r *http.Request, g grant) {
	if !hasScope(g, "read:org", "write:org", "admin:org", "user") {
		writeJSON(w, http.StatusForbidden, apiError{"You need at least read:org scope or user scope to list your organizations.",
			"https://docs.github.com/rest/orgs/orgs#list-organizations-for-the-authenticated-user", "403"})
		return
	}
	base := apiBase(r)
	var items []any
	for _, o := range s.o.User.Orgs {
		if !o.SSOUnauthorized {
			items = append(items, orgSimple(base, o))
		}
	}
	s.ssoPartial(w)
	paginate(w, r, items)
}

// ssoPartial sets GitHub's X-GitHub-SSO header on a list that left out the
// organisations (and their teams) the token is not authorized for by SAML
// single sign-on: "partial-results; organizations=" and their ids.
func (s *Server) ssoPartial(w http.ResponseWriter) {
	var ids []string
	for _, o := range s.o.User.Orgs {
		if o.SSOUnauthorized {
			ids = append(ids, strconv.FormatInt(o.ID, 10))
		}
	}
	if len(ids) > 0 {
		w.Header().Set("X-GitHub-SSO", "partial-results; organizations="+strings.Join(ids, ","))
	}
}

// ssoHidden reports whether org (a login) is one the token may not read.
func (s *Server) ssoHidden(org string) bool {
	return slices.ContainsFunc(s.o.User.Orgs, func(o Org) bool { return o.SSOUnauthorized && strings.EqualFold(o.Login, org) })
}

func orgSimple(base string, o Org) map[string]any {
	return map[string]any{
		"login":              o.Login,
		"id":                 o.ID,
		"node_id":            "MDEyOk9yZ2FuaXphdGlvbj" + strconv.FormatInt(o.ID, 10),
		"url":                base + "/orgs/" + o.Login,
		"repos_url":          base + "/orgs/" + o.Login + "/repos",
		"events_url":         base + "/orgs/" + o.Login + "/events",
		"hooks_url":          base + "/orgs/" + o.Login + "/hooks",
		"issues_url":         base + "/orgs/" + o.Login + "/issues",
		"members_url":        base + "/orgs/" + o.Login + "/members{/member}",
		"public_members_url": base + "/orgs/" + o.Login + "/public_members{/member}",
		"avatar_url":         "https://github.com/images/error/octocat_happy.gif",
		"description":        "A great organization",
	}
}

// teams is GET /user/teams: full team objects with their organization.
func (s *Server) teams(w http.ResponseWriter, r *http.Request, g grant) {
	base := apiBase(r)
	var items []any
	for i, t := range s.o.User.Teams {
		if s.ssoHidden(t.Org) {
			continue
		}
		// The team's organization is the user's organisation of that login,
		// with its id.
		o := Org{Login: t.Org, ID: int64(1000 + i)}
		if j := slices.IndexFunc(s.o.User.Orgs, func(o Org) bool { return strings.EqualFold(o.Login, t.Org) }); j >= 0 {
			o = s.o.User.Orgs[j]
		}
		org := orgSimple(base, o)
		org["name"] = t.Org
		org["html_url"] = "https://github.com/" + t.Org
		org["type"] = "Organization"
		org["created_at"] = "2008-01-14T04:33:35Z"
		org["updated_at"] = "2014-03-03T18:58:10Z"
		items = append(items, map[string]any{
			"id":                   t.ID,
			"node_id":              "MDQ6VGVhbT" + strconv.FormatInt(t.ID, 10),
			"url":                  base + "/teams/" + strconv.FormatInt(t.ID, 10),
			"html_url":             "https://github.com/orgs/" + t.Org + "/teams/" + t.Slug,
			"name":                 t.Name,
			"slug":                 t.Slug,
			"description":          "A great team.",
			"privacy":              "closed",
			"notification_setting": "notifications_enabled",
			"permission":           "admin",
			"members_url":          base + "/teams/" + strconv.FormatInt(t.ID, 10) + "/members{/member}",
			"repositories_url":     base + "/teams/" + strconv.FormatInt(t.ID, 10) + "/repos",
			"parent":               nil,
			"members_count":        3,
			"repos_count":          10,
			"created_at":           "2017-07-14T16:53:42Z",
			"updated_at":           "2017-08-17T12:37:15Z",
			"organization":         org,
		})
	}
	s.ssoPartial(w)
	paginate(w, r, items)
}

// paginate writes one page of items (per_page default 30, at most 100; page
// from 1) with GitHub's Link header: first/prev when not on the first page,
// next/last when not on the last.
func paginate(w http.ResponseWriter, r *http.Request, items []any) {
	q := r.URL.Query()
	perPage, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || perPage < 1 {
		perPage = 30
	}
	perPage = min(perPage, 100)
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page < 1 {
		page = 1
	}
	last := max(1, (len(items)+perPage-1)/perPage)
	link := func(p int, rel string) string {
		q.Set("page", strconv.Itoa(p))
		return fmt.Sprintf(`<%s%s?%s>; rel="%s"`, "http://"+r.Host, r.URL.Path, q.Encode(), rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(page-1, "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	from := min((page-1)*perPage, len(items))
	to := min(from+perPage, len(items))
	writeJSON(w, http.StatusOK, append([]any{}, items[from:to]...))
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
