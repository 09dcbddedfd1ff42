package proxy

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/portcullis-proxy/portcullis/idp"
)

//go:embed pages
var pageFiles embed.FS

// PagesConfig is the `pages:` block: how the proxy's own pages (the IdP
// chooser, the email form, errors, "access denied", "signed out") look.
type PagesConfig struct {
	// Title names the application on every page and in the browser's tab
	// (default "portcullis").
	Title string `yaml:"title"`
	// LogoURL is an image shown above the title: an https URL or a
	// data:image/... URI.
	LogoURL string `yaml:"logo_url"`
	// AccentColor colours the buttons, as #rrggbb; their white text must
	// keep a contrast of at least 4.5:1 on it.
	AccentColor string `yaml:"accent_color"`
	// TemplateDir holds templates that replace the embedded ones of the same
	// file name (layout.html, chooser.html, email.html, ldap.html,
	// error.html, denied.html, sign_out.html, signed_out.html,
	// saml_post.html, style.css).
	// They are parsed at load.
	TemplateDir string `yaml:"template_dir"`
}

// defaultTitle is the brand when pages.title is empty.
const defaultTitle = "portcullis"

// pageNames are the pages there are, each a template file defining
// "content", rendered inside layout.html's "layout".
var pageNames = []string{"chooser", "email", "error", "denied", "sign_out", "signed_out", "ldap", "saml_post"}

// pages renders the proxy's own pages: plain, accessible HTML that works
// without JavaScript. Clients that do not want HTML get JSON instead.
type pages struct {
	brand      string
	logo       template.URL
	authPrefix string
	css        template.CSS
	csp        string
	// tmpl gives each page's template, parsed when the page is first
	// rendered: a deployment shows a few of the six, and a parsed
	// html/template is ≈ 13 KB of pointers that every GC cycle scans.
	tmpl map[string]func() *template.Template
	log  *slog.Logger
}

// newPages builds the pages pages.* describes. The configuration was checked
// at load; should the template directory fail now, the embedded pages serve.
func newPages(c PagesConfig, authPrefix string, log *slog.Logger) *pages {
	p, err := buildPages(c, authPrefix, log)
	if err != nil {
		log.Error("pages: using the built-in pages", "err", err)
		c.TemplateDir = ""
		p, err = buildPages(c, authPrefix, log)
		if err != nil {
			p, _ = buildPages(PagesConfig{}, authPrefix, log)
		}
	}
	return p
}

// validate checks the pages block, templates included.
func (c PagesConfig) validate(p *problems) {
	_, err := buildPages(c, "/.portcullis", slog.New(slog.DiscardHandler))
	p.addAll("", err)
}

var hexColor = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

// logoHost is the host[:port] of an https logo_url as the img-src of the
// pages' Content-Security-Policy names it. url.Parse lets ';', ',' and '*'
// through in a host: the first would end the directive and start another.
var logoHost = regexp.MustCompile(`^[A-Za-z0-9.:\[\]-]+$`)

// buildPages parses and trial-renders every page, so that a template mistake
// is a configuration error naming its file rather than a broken login page.
func buildPages(c PagesConfig, authPrefix string, log *slog.Logger) (*pages, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("pages.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	p := &pages{brand: c.Title, authPrefix: authPrefix, tmpl: map[string]func() *template.Template{}, log: log}
	if p.brand == "" {
		p.brand = defaultTitle
	}
	imgSrc := "'self' data:"
	if c.LogoURL != "" {
		u, err := url.Parse(c.LogoURL)
		switch {
		case err == nil && u.Scheme == "https" && logoHost.MatchString(u.Host) && u.User == nil:
			imgSrc += " " + u.Scheme + "://" + u.Host
			p.logo = template.URL(c.LogoURL)
		case strings.HasPrefix(c.LogoURL, "data:image/") && !strings.ContainsAny(c.LogoURL, "\"'<> \n"):
			p.logo = template.URL(c.LogoURL)
		default:
			bad("logo_url", "must be an https:// URL or a data:image/... URI")
		}
	}
	accent := ""
	if c.AccentColor != "" {
		if !hexColor.MatchString(c.AccentColor) {
			bad("accent_color", "must be a colour as #rrggbb, got %q", c.AccentColor)
		} else if ratio := contrast(c.AccentColor, "#ffffff"); ratio < 4.5 {
			bad("accent_color", "white button text on %s has a contrast of %.1f:1, below the 4.5:1 that text needs; pick a darker colour", c.AccentColor, ratio)
		} else {
			accent = fmt.Sprintf("\n:root { --accent: %s; }\n", strings.ToLower(c.AccentColor))
		}
	}
	p.csp = "default-src 'none'; style-src 'unsafe-inline'; img-src " + imgSrc + "; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

	files, err := pageSources(c.TemplateDir)
	if err != nil {
		errs = append(errs, err)
	}
	p.css = template.CSS(files["style.css"] + accent)
	if _, err := template.New("layout.html").Parse(files["layout.html"]); err != nil {
		bad("template_dir", "layout.html: %v", err)
		return nil, errors.Join(errs...)
	}
	// Every page is parsed and trial-rendered now, to report its mistakes,
	// and parsed again from the same text when it is first shown.
	for _, name := range pageNames {
		layout, content := files["layout.html"], files[name+".html"]
		t, err := parsePage(layout, name, content)
		if err != nil {
			bad("template_dir", "%s.html: %v", name, err)
			continue
		}
		if err := p.executeTemplate(t, &bytes.Buffer{}, samplePage); err != nil {
			bad("template_dir", "%s.html: %v", name, err)
		}
		p.tmpl[name] = sync.OnceValue(func() *template.Template {
			t, _ := parsePage(layout, name, content) // parsed above without an error
			return t
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// parsePage is the template of one page: the layout, with the page's file
// defining its "content".
func parsePage(layout, name, content string) (*template.Template, error) {
	t, err := template.New("layout.html").Parse(layout)
	if err != nil {
		return nil, err
	}
	return t.New(name + ".html").Parse(content)
}

// pageSources returns the text of every template and the style sheet: the
// embedded ones, replaced by those in dir of the same name.
func pageSources(dir string) (map[string]string, error) {
	known := []string{"layout.html", "style.css"}
	for _, n := range pageNames {
		known = append(known, n+".html")
	}
	files := map[string]string{}
	for _, name := range known {
		b, err := pageFiles.ReadFile("pages/" + name)
		if err != nil {
			return nil, fmt.Errorf("pages: embedded %s: %w", name, err)
		}
		files[name] = string(b)
	}
	if dir == "" {
		return files, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return files, fmt.Errorf("pages.template_dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || (filepath.Ext(name) != ".html" && filepath.Ext(name) != ".css") {
			continue
		}
		if !slices.Contains(known, name) {
			errs = append(errs, fmt.Errorf("pages.template_dir: %s replaces no page (want one of %s)", name, strings.Join(known, ", ")))
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, fmt.Errorf("pages.template_dir: %w", err))
			continue
		}
		files[name] = string(b)
	}
	return files, errors.Join(errs...)
}

// samplePage fills every field a template may show, for the trial render.
var samplePage = page{
	Brand: "Example", Title: "Sign in", Message: "A message.", Reason: "A reason.", Status: 403,
	Link: "/login", LinkText: "Sign in again", Providers: []choice{{Name: "Company SSO", Href: "/login/company"}},
	Action: "/login", RD: "/", Email: "name@example.com",
	IdPName: "Company directory", Username: "alice", State: "state", RequestID: "0123456789abcdef0123456789abcdef",
	Fields: []formField{{Name: "SAMLResponse", Value: "PHNhbWxwOkxvZ291dFJlc3BvbnNlLz4="}}, Script: samlPostScript,
}

// contrast is the WCAG 2 contrast ratio of two #rrggbb colours.
func contrast(a, b string) float64 {
	la, lb := luminance(a), luminance(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

func luminance(hex string) float64 {
	var l float64
	for i, weight := range []float64{0.2126, 0.7152, 0.0722} {
		v, _ := strconv.ParseUint(hex[1+2*i:3+2*i], 16, 8)
		c := float64(v) / 255
		if c <= 0.04045 {
			c /= 12.92
		} else {
			c = math.Pow((c+0.055)/1.055, 2.4)
		}
		l += weight * c
	}
	return l
}

// page is what every template sees.
type page struct {
	Brand, Title, Message string
	Logo                  template.URL
	CSS                   template.CSS
	Status                int
	Link, LinkText        string
	Providers             []choice
	Action, RD, Email     string
	// Reason says why access was denied.
	Reason string
	// The LDAP login form (ldap.go): the IdP's name, the username typed
	// so far, and the login flow's state.
	IdPName, Username, State string
	// RequestID is the request's X-Request-Id, on the pages that report a
	// failure: quoted by the user, it finds the log lines that say why.
	RequestID string
	// Fields are the hidden fields of a form that carries a message to
	// Action (saml_post.html), and Script the one script a page may run:
	// the one that posts that form.
	Fields []formField
	Script template.JS
}

type choice struct{ Name, Href string }

type formField struct{ Name, Value string }

func (p *pages) execute(buf *bytes.Buffer, name string, data page) error {
	return p.executeTemplate(p.tmpl[name](), buf, data)
}

func (p *pages) executeTemplate(t *template.Template, buf *bytes.Buffer, data page) error {
	data.Brand, data.CSS, data.Logo = p.brand, p.css, p.logo
	return t.ExecuteTemplate(buf, "layout", data)
}

func (p *pages) render(w http.ResponseWriter, status int, name string, data page) {
	// Rendered in full first: a failing template must not leave half a page
	// behind a 200.
	var buf bytes.Buffer
	if err := p.execute(&buf, name, data); err != nil {
		p.log.Error("render page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	csp := p.csp
	switch name {
	case "email", "sign_out":
		// The email form's answer redirects to the IdP, another origin, and
		// so does a sign-out with single_sign_out; browsers apply
		// form-action to the redirects after a submission too.
		csp = strings.Replace(csp, " form-action 'self';", "", 1)
	case "saml_post":
		// The form posts to the IdP, which may redirect on; its script, by
		// hash, posts it without a click. IdPs that sign a user out of
		// every service at once load this page in a hidden frame of their
		// own logout page, so it may be framed, as crewjam/saml's page was.
		csp = strings.Replace(csp, " form-action 'self';", "", 1)
		csp = strings.Replace(csp, " frame-ancestors 'none';", "", 1)
		csp += "; script-src " + samlPostScriptHash
	}
	if name != "saml_post" {
		h.Set("X-Frame-Options", "DENY")
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	// As layout.html's meta tag says, for layouts from template_dir that
	// lack it: pages shown at the OIDC callback have its code in their URL,
	// and a logo may load from another origin.
	h.Set("Referrer-Policy", "no-referrer")
	if status != 0 {
		w.WriteHeader(status)
	}
	w.Write(buf.Bytes())
}

func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// fail answers with an error: a page for browsers, JSON for everything else.
func (p *pages) fail(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	p.failWithLink(w, r, status, title, msg, "", "")
}

func (p *pages) failWithLink(w http.ResponseWriter, r *http.Request, status int, title, msg, link, linkText string) {
	if !wantsHTML(r) {
		writeJSON(w, status, map[string]string{"error": errorCode(title), "message": msg})
		return
	}
	p.render(w, status, "error", page{Title: title, Message: msg, Status: status, Link: link, LinkText: linkText,
		RequestID: r.Header.Get(requestIDHeader)})
}

// errorCode is a page title as the code of a JSON error: snake case, as the
// proxy's other codes (access_denied, sign_out_not_done), so "Sign-in
// failed" is sign_in_failed.
func errorCode(title string) string {
	return strings.ToLower(titleToCode.Replace(title))
}

var titleToCode = strings.NewReplacer(" ", "_", "-", "_")

// denied says that the user signed in but may not use the application, and
// why (from role mapping or the IdP entry's admission rules).
func (p *pages) denied(w http.ResponseWriter, r *http.Request, reason string) {
	if !wantsHTML(r) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "access_denied", "message": reason})
		return
	}
	p.render(w, http.StatusForbidden, "denied", page{Title: "Access denied", Reason: reason, Status: http.StatusForbidden,
		Link: p.authPrefix + "/login", LinkText: "Sign in with another account", RequestID: r.Header.Get(requestIDHeader)})
}

func (p *pages) chooser(w http.ResponseWriter, r *http.Request, providers []*provider, rd string) {
	data := page{Title: "Sign in"}
	for _, pr := range providers {
		href := withRedirect(p.authPrefix+"/login/"+url.PathEscape(pr.cfg.ID), rd)
		data.Providers = append(data.Providers, choice{Name: pr.cfg.DisplayName(), Href: href})
	}
	p.render(w, 0, "chooser", data)
}

func (p *pages) emailForm(w http.ResponseWriter, status int, rd, email, msg string) {
	p.render(w, status, "email", page{Title: "Sign in", Message: msg, Action: p.authPrefix + "/login", RD: rd, Email: email})
}

// askToSignOut asks the user whether to sign out, for a logout that another
// site sent (sentByAnotherSite): a form that posts it, with rd, from
// the proxy's own origin, and a way back to the application instead.
func (p *pages) askToSignOut(w http.ResponseWriter, r *http.Request, rd string) {
	if !wantsHTML(r) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "sign_out_not_done",
			"message": "another site asked for this sign-out; sign out from this application's own pages"})
		return
	}
	p.render(w, 0, "sign_out", page{Title: "Sign out?", Message: "Another site sent you here to sign out of this application.",
		Action: p.authPrefix + "/logout", RD: rd, Link: "/", LinkText: "Back to the application"})
}

func (p *pages) signedOut(w http.ResponseWriter, r *http.Request) {
	p.render(w, 0, "signed_out", page{Title: "Signed out", Link: p.authPrefix + "/login"})
}

// samlPostScript posts saml_post.html's form as soon as the page loads, as
// the SAML HTTP-POST binding expects of the browser: in an IdP's hidden
// frame there is nobody to press the button. Without JavaScript the button
// does it.
const samlPostScript = `document.getElementById("saml-post").submit()`

// samlPostScriptHash allows samlPostScript, and no other script, in the
// page's Content-Security-Policy.
var samlPostScriptHash = func() string {
	sum := sha256.Sum256([]byte(samlPostScript))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}()

// samlPost shows the page that carries a SAML message on to the IdP named
// idpName over the HTTP-POST binding: a form that posts itself, with a
// button that says where it goes for browsers without JavaScript.
func (p *pages) samlPost(w http.ResponseWriter, idpName string, post *idp.SAMLPost) {
	data := page{Title: "Signing out", IdPName: idpName, Action: post.URL, Script: samlPostScript}
	for _, name := range slices.Sorted(maps.Keys(post.Fields)) {
		data.Fields = append(data.Fields, formField{Name: name, Value: post.Fields.Get(name)})
	}
	p.render(w, 0, "saml_post", data)
}
