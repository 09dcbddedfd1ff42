// Package echo is an upstream application for tests and the demo: it answers
// every request with what it received (method, path, headers, body size), as
// JSON, or as a small HTML page for browsers (with a link and a form that
// posts back to the page, for journeys through it), and remembers the requests so
// tests can assert what reached it.
package echo

import (
	"encoding/json"
	"html/template"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Request is what the upstream received.
type Request struct {
	Method     string      `json:"method"`
	Path       string      `json:"path"`        // decoded, as the upstream routes it
	RequestURI string      `json:"request_uri"` // exactly as sent on the wire
	Host       string      `json:"host"`
	Header     http.Header `json:"headers"`
	// Trailer is what followed a chunked body, nil when nothing did.
	Trailer   http.Header `json:"trailers,omitempty"`
	BodyBytes int64       `json:"body_bytes"`
}

// Server is the echo upstream. Its zero value is not usable; use New.
type Server struct {
	mu   sync.Mutex
	seen []Request
}

// New returns an echo upstream with nothing seen yet.
func New() *Server { return &Server{} }

// ServeHTTP answers with what it received.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	req := Request{Method: r.Method, Path: r.URL.Path, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), BodyBytes: n}
	if len(r.Trailer) > 0 { // filled in once the body is read
		req.Trailer = r.Trailer.Clone()
	}
	s.mu.Lock()
	s.seen = append(s.seen, req)
	s.mu.Unlock()
	w.Header().Set("X-Echo", "1")
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page.Execute(w, view(req))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(req)
}

// Requests returns every request seen so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// Last returns the most recent request and whether there was one.
func (s *Server) Last() (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		return Request{}, false
	}
	return s.seen[len(s.seen)-1], true
}

// Reset forgets the requests seen.
func (s *Server) Reset() {
	s.mu.Lock()
	s.seen = nil
	s.mu.Unlock()
}

type header struct{ Name, Value string }

type pageData struct {
	Req      Request
	Email    string
	Groups   string
	Headers  []header
	Identity bool
}

func view(r Request) pageData {
	d := pageData{Req: r, Email: r.Header.Get("X-Email"), Groups: r.Header.Get("X-Groups")}
	d.Identity = d.Email != "" || d.Groups != ""
	for _, name := range slices.Sorted(maps.Keys(r.Header)) {
		for _, v := range r.Header[name] {
			d.Headers = append(d.Headers, header{name, v})
		}
	}
	return d
}

var page = template.Must(template.New("echo").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Echo upstream</title>
<style>body{font:16px/1.5 system-ui,sans-serif;margin:2rem;max-width:60rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}code{word-break:break-all}</style></head>
<body><h1>Echo upstream</h1>
{{if .Identity}}<p>Signed in as <strong id="email">{{.Email}}</strong> with role <strong id="role">{{.Groups}}</strong>.</p>
<p><a href="/.portcullis/logout">Sign out</a></p>
{{else}}<p id="anonymous">This request carried no identity headers.</p>{{end}}
<h2>{{.Req.Method}} <code>{{.Req.RequestURI}}</code></h2>
<nav><a id="projects" href="/projects">Projects</a></nav>
<form method="post" id="note-form"><label>Note <input name="note" value="a note"></label> <button id="post">Post this page</button></form>
<table><caption>Headers the upstream received</caption><tr><th scope="col">Header</th><th scope="col">Value</th></tr>
{{range .Headers}}<tr><td>{{.Name}}</td><td><code>{{.Value}}</code></td></tr>
{{end}}</table></body></html>`))
