package idp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// GitHub REST API request headers (API version 2022-11-28).
const (
	githubAccept     = "application/vnd.github+json"
	githubAPIVersion = "2022-11-28"
	// githubMaxPages bounds how many pages of one list a login reads.
	githubMaxPages = 20
	// maxGitHubAnswer bounds each API answer, read whole (a page of 100
	// teams carries each one's organization).
	maxGitHubAnswer = 4 << 20
)

// GitHubAPIError is a GitHub REST API answer other than 200.
type GitHubAPIError struct {
	// Path is the request's path, e.g. /user/emails.
	Path string
	// Status is the HTTP status code.
	Status int
	// Message is GitHub's "message" field.
	Message string
	// RateLimited is true for a primary (X-RateLimit-Remaining: 0) or
	// secondary (Retry-After) rate limit; Reset is when to try again, when known.
	RateLimited bool
	Reset       time.Time
}

func (e *GitHubAPIError) Error() string {
	switch {
	case e.RateLimited && !e.Reset.IsZero():
		return fmt.Sprintf("github GET %s: rate limit exceeded (%d %s), resets at %s", e.Path, e.Status, e.Message, e.Reset.UTC().Format(time.RFC3339))
	case e.RateLimited:
		return fmt.Sprintf("github GET %s: rate limit exceeded (%d %s)", e.Path, e.Status, e.Message)
	case e.Status == http.StatusUnauthorized:
		return fmt.Sprintf("github GET %s: the access token was refused (401 %s)", e.Path, e.Message)
	}
	return fmt.Sprintf("github GET %s: %d %s", e.Path, e.Status, e.Message)
}

// oauthErrorCode is the RFC 6749 error code (section 5.2) that an error
// code of GitHub's token endpoint stands for, which GitHub answers with
// status 200 and codes of its own
// (https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors):
// bad_verification_code for a code that is wrong, expired or spent, and
// bad_refresh_token for a GitHub App's refresh token that is, or whose
// grant the user revoked, invalid_grant both; incorrect_client_credentials
// invalid_client. Glewlwyd (2.7) answers invalid_code, with status 403,
// for a code it does not take (made up, spent, expired): invalid_grant
// too. Any other code is itself.
func oauthErrorCode(code string) string {
	switch code {
	case "bad_verification_code", "bad_refresh_token", "invalid_code":
		return "invalid_grant"
	case "incorrect_client_credentials":
		return "invalid_client"
	}
	return code
}

// githubEmail is one entry of GET /user/emails.
type githubEmail struct {
	Email    string `json:"email"`
	Primary  bool   `json:"primary"`
	Verified bool   `json:"verified"`
}

// githubOrg is one entry of GET /user/orgs, or a team's organization.
type githubOrg struct {
	Login string `json:"login"`
}

// githubTeam is one entry of GET /user/teams.
type githubTeam struct {
	Slug         string    `json:"slug"`
	Organization githubOrg `json:"organization"`
}

// githubClaims builds the claims of a GitHub login from the REST API: every
// field of GET /user, sub (the numeric id as text), email and email_verified
// from GET /user/emails (the primary address if verified, else the first
// verified one; never an unverified address), and groups: the logins of
// GET /user/orgs and "org/team-slug" of GET /user/teams, read only when the
// token was granted read:org (or a scope that includes it).
func (p *oidcProvider) githubClaims(ctx context.Context, token *oauth2.Token) (map[string]any, error) {
	id := p.cfg.ID
	api := strings.TrimSuffix(p.cfg.UserinfoURL, "/user")
	gh := githubClient{client: p.client, token: token, api: api}

	claims := map[string]any{}
	if err := gh.get(ctx, api+"/user", &claims); err != nil {
		return nil, fmt.Errorf("oidc %s: fetch user: %w", id, err)
	}
	claims["sub"] = claimText(claims["id"])

	emails, _, err := githubList[githubEmail](ctx, gh, "/user/emails")
	if err != nil {
		return nil, fmt.Errorf("oidc %s: fetch emails: %w", id, err)
	}
	// The public profile email is whatever the user typed; only /user/emails
	// says whether an address is verified.
	claims["email"], claims["email_verified"] = "", false
	if e, ok := verifiedEmail(emails); ok {
		claims["email"], claims["email_verified"] = e, true
	}

	groups := []any{}
	if grantedReadOrg(token) {
		orgs, hiddenOrgs, err := githubList[githubOrg](ctx, gh, "/user/orgs")
		if err != nil {
			return nil, fmt.Errorf("oidc %s: fetch organizations: %w", id, err)
		}
		for _, o := range orgs {
			groups = append(groups, o.Login)
		}
		teams, hiddenTeams, err := githubList[githubTeam](ctx, gh, "/user/teams")
		if err != nil {
			return nil, fmt.Errorf("oidc %s: fetch teams: %w", id, err)
		}
		for _, t := range teams {
			groups = append(groups, t.Organization.Login+"/"+t.Slug)
		}
		if hidden := slices.Compact(slices.Sorted(slices.Values(append(hiddenOrgs, hiddenTeams...)))); len(hidden) > 0 {
			// GitHub says nothing else: the user is simply not in them here,
			// and allowed_organizations or a rule refuses a member.
			p.log.Warn("github left out organizations that enforce SAML single sign-on, which the user had no single sign-on session for when authorizing the app: "+
				"groups lack them and their teams until the user signs in to each at https://github.com/orgs/ORG/sso and then here again",
				"user", claimText(claims["login"]), "organization_ids", strings.Join(hidden, ","))
		}
	}
	claims["groups"] = groups
	return claims, nil
}

// verifiedEmail picks the primary address if it is verified, else the first
// verified address.
func verifiedEmail(emails []githubEmail) (string, bool) {
	for _, e := range emails {
		if e.Primary && e.Verified {
			return e.Email, true
		}
	}
	for _, e := range emails {
		if e.Verified {
			return e.Email, true
		}
	}
	return "", false
}

// grantedReadOrg reports whether the token may list the user's organisations
// and teams (read:org or a scope that includes it, or user). An OAuth app's token answer lists the granted scopes,
// comma-separated. A GitHub App's lists none (its scope is always the empty
// string: the app's permissions, Members among them, say what the token may
// read), and neither does another server: then the lists are tried.
func grantedReadOrg(token *oauth2.Token) bool {
	granted, ok := token.Extra("scope").(string)
	if !ok || granted == "" {
		return true
	}
	for s := range strings.SplitSeq(granted, ",") {
		switch strings.TrimSpace(s) {
		case "read:org", "write:org", "admin:org", "user":
			// user is enough for both lists too: GET /user/orgs "requires
			// at least user or read:org", GET /user/teams user, repo or
			// read:org (repo alone lets GitHub list teams, not orgs).
			return true
		}
	}
	return false
}

// githubClient makes authenticated GitHub REST API calls.
type githubClient struct {
	client *http.Client
	token  *oauth2.Token
	api    string
}

// githubList reads every page of a list endpoint, following Link rel="next".
// It also returns the ids of the organisations GitHub left out of the list
// (X-GitHub-SSO: partial-results): those that enforce SAML single sign-on,
// which the token was not authorized for.
func githubList[T any](ctx context.Context, gh githubClient, path string) ([]T, []string, error) {
	var all []T
	var ssoHidden []string
	next := gh.api + path + "?per_page=100"
	for page := 0; next != ""; page++ {
		if page == githubMaxPages {
			return nil, nil, fmt.Errorf("github GET %s: more than %d pages", path, githubMaxPages)
		}
		var items []T
		resp, err := gh.do(ctx, next, &items)
		if err != nil {
			return nil, nil, err
		}
		all = append(all, items...)
		for _, id := range ssoPartialResults(resp.Header.Get("X-GitHub-SSO")) {
			if !slices.Contains(ssoHidden, id) {
				ssoHidden = append(ssoHidden, id)
			}
		}
		if next, err = gh.nextPage(resp.Header.Get("Link")); err != nil {
			return nil, nil, fmt.Errorf("github GET %s: %w", path, err)
		}
	}
	return all, ssoHidden, nil
}

// ssoPartialResults reads the organisation ids of an X-GitHub-SSO header
// "partial-results; organizations=21955855,20582480"
// (https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api);
// nil for any other value.
func ssoPartialResults(header string) []string {
	kind, params, _ := strings.Cut(header, ";")
	if strings.TrimSpace(kind) != "partial-results" {
		return nil
	}
	var ids []string
	for param := range strings.SplitSeq(params, ";") {
		if list, ok := strings.CutPrefix(strings.TrimSpace(param), "organizations="); ok {
			for id := range strings.SplitSeq(list, ",") {
				if id = strings.TrimSpace(id); id != "" {
					ids = append(ids, id)
				}
			}
		}
	}
	return ids
}

func (gh githubClient) get(ctx context.Context, u string, into any) error {
	_, err := gh.do(ctx, u, into)
	return err
}

// do GETs u and decodes its JSON into into, returning the response (body
// closed) for its headers.
func (gh githubClient) do(ctx context.Context, u string, into any) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", githubAccept)
	req.Header.Set("X-GitHub-Api-Version", githubAPIVersion)
	req.Header.Set("User-Agent", "portcullis")
	gh.token.SetAuthHeader(req)
	resp, err := gh.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, maxGitHubAnswer)
	if err != nil {
		return nil, fmt.Errorf("github GET %s: %w", req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, githubError(req.URL.Path, resp, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return nil, fmt.Errorf("github GET %s: decode: %w", req.URL.Path, err)
	}
	return resp, nil
}

// githubError reads GitHub's error answer: a JSON message, and for rate
// limits the X-RateLimit-* or Retry-After headers.
func githubError(path string, resp *http.Response, body []byte) *GitHubAPIError {
	e := &GitHubAPIError{Path: path, Status: resp.StatusCode}
	var msg struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &msg) == nil && msg.Message != "" {
		e.Message = truncate(msg.Message, 200)
	} else {
		e.Message = http.StatusText(resp.StatusCode)
	}
	if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests {
		if resp.Header.Get("X-RateLimit-Remaining") == "0" {
			e.RateLimited = true
			if reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
				e.Reset = time.Unix(reset, 0)
			}
		}
		if after, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			e.RateLimited = true
			e.Reset = time.Now().Add(time.Duration(after) * time.Second)
		}
	}
	return e
}

// nextPage returns the rel="next" URL of a Link header, or "" on the last
// page. It must stay on the API's origin: the token goes with it.
func (gh githubClient) nextPage(link string) (string, error) {
	for part := range strings.SplitSeq(link, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
			continue
		}
		isNext := false
		for param := range strings.SplitSeq(params, ";") {
			if strings.TrimSpace(param) == `rel="next"` {
				isNext = true
			}
		}
		if !isNext {
			continue
		}
		next, err := url.Parse(target[1 : len(target)-1])
		api, _ := url.Parse(gh.api)
		if err != nil || api == nil || next.Scheme != api.Scheme || next.Host != api.Host {
			return "", errors.New("next page link leaves the API's origin")
		}
		return next.String(), nil
	}
	return "", nil
}
