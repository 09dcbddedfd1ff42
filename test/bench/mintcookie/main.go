// Command mintcookie prints the Cookie header of a session for one user, made
// as a login would make it (roles mapped by the config's role_mapping, sealed
// with its session keys), so the load run can exercise the authenticated path
// without an identity provider.
package main

import (
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/rolemap"
)

func main() {
	path := flag.String("config", "portcullis.yaml", "the proxy's configuration file")
	email := flag.String("email", "bench@example.com", "the user's email (also the subject)")
	groups := flag.String("groups", "", "the user's groups, comma-separated")
	idpID := flag.String("idp", "bench", "the identity provider the session claims to come from")
	flag.Parse()
	header, err := mint(*path, *email, *groups, *idpID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mintcookie:", err)
		os.Exit(1)
	}
	fmt.Println(header)
}

func mint(path, email, groups, idpID string) (string, error) {
	cfg, err := proxy.LoadConfig(path, os.Getenv)
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	o, err := proxy.SessionOptions(cfg) // checks cfg whole
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}

	// email_verified as an OIDC IdP says it: the proxy holds a session to its IdP's word.
	p := idp.Profile{IdP: idpID, Sub: email, Email: email, EmailVerified: true, Username: email,
		Claims: map[string]any{"email_verified": true}}
	if groups != "" {
		p.Groups = strings.Split(groups, ",")
	}
	mapper, err := rolemap.Compile(cfg.RoleMapping)
	if err != nil {
		return "", fmt.Errorf("role_mapping: %w", err)
	}
	if p.Roles, err = mapper.Map(&p); err != nil {
		return "", fmt.Errorf("map roles: %w", err)
	}

	store, err := session.NewCookieStore(o)
	if err != nil {
		return "", fmt.Errorf("session store: %w", err)
	}
	rec := httptest.NewRecorder()
	if err := store.Save(rec, httptest.NewRequest("GET", "/", nil), session.New(p, idp.Tokens{}, o)); err != nil {
		return "", fmt.Errorf("seal session: %w", err)
	}
	var parts []string
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge >= 0 && c.Value != "" { // not the deletion of a stale chunk
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	return strings.Join(parts, "; "), nil
}
