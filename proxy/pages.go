package proxy

import (
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

//go:embed pages
var pageFiles embed.FS

// pages renders the proxy's own pages: plain, accessible HTML that works
// without JavaScript. Clients that do not want HTML get JSON instead.
type pages struct {
	brand      string
	authPrefix string
	css        template.CSS
	tmpl       map[string]*template.Template
	log        *slog.Logger
}

func newPages(brand, authPrefix string, log *slog.Logger) *pages {
	css, _ := pageFiles.ReadFile("pages/style.css")
	p := &pages{brand: brand, authPrefix: authPrefix, css: template.CSS(css), tmpl: map[string]*template.Template{}, log: log}
	layout := template.Must(template.ParseFS(pageFiles, "pages/layout.html"))
	for _, name := range []string{"error", "chooser", "email", "signed_out"} {
		p.tmpl[name] = template.Must(template.Must(layout.Clone()).ParseFS(pageFiles, "pages/"+name+".html"))
	}
	return p
}

// page is what every template sees.
type page struct {
	Brand, Title, Message string
	CSS                   template.CSS
	Status                int
	Link, LinkText        string
	Providers             []choice
	Action, RD, Email     string
}

type choice struct{ Name, Href string }

func (p *pages) render(w http.ResponseWriter, status int, name string, data page) {
	data.Brand, data.CSS = p.brand, p.css
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	if status != 0 {
		w.WriteHeader(status)
	}
	if err := p.tmpl[name].ExecuteTemplate(w, "layout", data); err != nil {
		p.log.Error("render page", "page", name, "err", err)
	}
}

// fail answers with an error: a page for browsers, JSON for everything else.
func (p *pages) fail(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	p.failWithLink(w, r, status, title, msg, "", "")
}

func (p *pages) failWithLink(w http.ResponseWriter, r *http.Request, status int, title, msg, link, linkText string) {
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		writeJSON(w, status, map[string]string{"error": strings.ToLower(strings.ReplaceAll(title, " ", "_")), "message": msg})
		return
	}
	p.render(w, status, "error", page{Title: title, Message: msg, Status: status, Link: link, LinkText: linkText})
}

func (p *pages) chooser(w http.ResponseWriter, r *http.Request, providers []*provider, rd string) {
	data := page{Title: "Sign in"}
	for _, pr := range providers {
		href := p.authPrefix + "/login/" + url.PathEscape(pr.cfg.ID)
		if rd != "" {
			href += "?rd=" + url.QueryEscape(rd)
		}
		data.Providers = append(data.Providers, choice{Name: pr.cfg.DisplayName(), Href: href})
	}
	p.render(w, 0, "chooser", data)
}

func (p *pages) emailForm(w http.ResponseWriter, status int, rd, email, msg string) {
	p.render(w, status, "email", page{Title: "Sign in", Message: msg, Action: p.authPrefix + "/login", RD: rd, Email: email})
}

func (p *pages) signedOut(w http.ResponseWriter, r *http.Request) {
	p.render(w, 0, "signed_out", page{Title: "Signed out", Link: p.authPrefix + "/login"})
}
