// Package demo runs `portcullis demo`: an embedded SAML identity provider
// with two demo users, an echo upstream that shows what it receives, and the
// proxy between them with a CVAT-like configuration, all on loopback. It
// lives outside package main so that end-to-end tests can run it in-process.
package demo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// DefaultListen is the proxy's address unless Options.Listen says otherwise.
const DefaultListen = "127.0.0.1:9772"

// IdPID is the id of the demo identity provider in the configuration (and in
// its URLs under /.portcullis/saml/).
const IdPID = "demo"

// grace is how long requests in flight may take to finish on Ctrl-C.
const grace = 2 * time.Second

// Options configure a demo.
type Options struct {
	// Listen is the proxy's address; default DefaultListen. Port 0 picks a
	// free one.
	Listen string
	// Logger receives the proxy's log (logins, refusals); default discarded.
	Logger *slog.Logger
	// Ready, when set, is called once everything serves, before Run blocks.
	Ready func(*Info)
}

// User is a demo account of the embedded identity provider.
type User struct {
	// Name is what to type into the identity provider's login form.
	Name     string
	Password string
	Email    string
	// Group is the group the identity provider asserts; Role is what the
	// demo's role mapping makes of it.
	Group string
	Role  string
}

// Info is what a running demo tells its user (and tests): where everything
// listens and who can log in.
type Info struct {
	// URL is the proxy's origin, the one to open in a browser.
	URL string
	// IdPURL, UpstreamURL and AdminURL are the servers behind it.
	IdPURL      string
	UpstreamURL string
	AdminURL    string
	Users       []User
	// Config is the YAML configuration the proxy runs with.
	Config string
	// Upstream is the echo application, which remembers what reached it.
	Upstream *echo.Server
	// Startup is how long it took from Run's call to serving.
	Startup time.Duration
}

// Run starts the demo, prints how to use it to stdout, and serves until ctx
// ends; then it stops every server and returns nil. It needs no
// configuration and reaches nothing beyond loopback.
func Run(ctx context.Context, o Options, stdout io.Writer) error {
	start := time.Now()
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The proxy's address comes first: the configuration and the IdP's view
	// of the service provider both name it.
	proxyLn, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("demo: listen on %s: %w (is another demo running? choose another address with --listen)", o.Listen, err)
	}
	defer proxyLn.Close()
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: admin listener: %w", err)
	}
	defer adminLn.Close()

	users, err := newUsers()
	if err != nil {
		return fmt.Errorf("demo: make passwords: %w", err)
	}
	var accounts []samlserver.User
	for _, u := range users {
		accounts = append(accounts, u.account())
	}
	idpSrv, err := samlserver.New(samlserver.Options{Users: accounts, Logger: log})
	if err != nil {
		return fmt.Errorf("demo: identity provider: %w", err)
	}
	defer idpSrv.Close()

	upstream := echo.New()
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: upstream listener: %w", err)
	}
	upSrv := &http.Server{Handler: upstream, ReadHeaderTimeout: 10 * time.Second}
	go upSrv.Serve(upLn)
	defer upSrv.Close()

	sp, err := newSPKeyPair()
	if err != nil {
		return fmt.Errorf("demo: service provider key: %w", err)
	}
	defer sp.remove()

	info := &Info{
		URL:         "http://" + publicHost(proxyLn.Addr()),
		IdPURL:      idpSrv.URL,
		UpstreamURL: "http://" + upLn.Addr().String(),
		AdminURL:    "http://" + adminLn.Addr().String(),
		Users:       users,
		Upstream:    upstream,
	}
	info.Config = configYAML(configParams{
		Listen:      proxyLn.Addr().String(),
		AdminListen: adminLn.Addr().String(),
		PublicURL:   info.URL,
		UpstreamURL: info.UpstreamURL,
		SessionKey:  sessionKey(),
		IdPEntityID: idpSrv.EntityID(),
		MetadataURL: idpSrv.MetadataURL(),
		SPCertFile:  sp.certFile,
		SPKeyFile:   sp.keyFile,
	})
	// The environment must not change the demo (PORTCULLIS_SESSION_KEYS,
	// PORTCULLIS_IDP_*): it runs exactly the configuration it prints.
	cfg, err := proxy.ParseConfig([]byte(info.Config), func(string) string { return "" })
	if err == nil {
		err = proxy.Check(cfg)
	}
	if err != nil {
		return fmt.Errorf("demo: configuration: %w", err)
	}
	h, err := proxy.New(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("demo: proxy: %w", err)
	}
	// The IdP's metadata was fetched in New, from a server already up.
	if problems := h.Ready(); len(problems) > 0 {
		return fmt.Errorf("demo: proxy not ready: %v", problems)
	}
	served := make(chan error, 1)
	go func() { served <- h.ServeOn(ctx, proxyLn, adminLn, grace) }()

	// Register portcullis at the IdP from its own metadata endpoint, as an
	// administrator would with a real IdP.
	mdURL := info.URL + cfg.Server.AuthPrefix + "/saml/" + IdPID + "/metadata"
	if err := idpSrv.AddServiceProviderURL(ctx, mdURL); err != nil {
		cancel()
		<-served
		return fmt.Errorf("demo: register portcullis at the identity provider: %w", err)
	}

	info.Startup = time.Since(start)
	printInfo(stdout, info)
	if o.Ready != nil {
		o.Ready(info)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("demo: proxy: %w", err)
	}
	fmt.Fprintln(stdout, "portcullis demo stopped.")
	return nil
}

// publicHost is the host:port browsers use to reach a listener: a wildcard
// address (":9772", "0.0.0.0:9772") is reached at 127.0.0.1.
func publicHost(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		_, port, _ := net.SplitHostPort(a.String())
		return net.JoinHostPort("127.0.0.1", port)
	}
	return tcp.String()
}

// The demo accounts. Their groups are what a real IdP would assert; the role
// mapping of the demo configuration turns them into CVAT roles.
const (
	adminGroup     = "cvat-admins"
	annotatorGroup = "annotators"
	emailDomain    = "demo.portcullis"
)

func newUsers() ([]User, error) {
	var users []User
	for _, u := range []User{
		{Name: "admin", Group: adminGroup, Role: "admin"},
		{Name: "annotator", Group: annotatorGroup, Role: "user"},
	} {
		pw, err := password()
		if err != nil {
			return nil, err
		}
		u.Password, u.Email = pw, u.Name+"@"+emailDomain
		users = append(users, u)
	}
	return users, nil
}

func (u User) account() samlserver.User {
	given := strings.ToUpper(u.Name[:1]) + u.Name[1:]
	return samlserver.User{
		Name: u.Name, Password: u.Password, Email: u.Email,
		GivenName: given, Surname: "Demo", CommonName: given + " Demo",
		Groups: []string{u.Group},
	}
}

// password is a fresh random password, easy to read and type:
// three groups of four lowercase letters and digits, without look-alikes.
func password() (string, error) {
	const alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	var s strings.Builder
	for i, c := range b {
		if i > 0 && i%4 == 0 {
			s.WriteByte('-')
		}
		// 256 % 31 leaves a slight bias: irrelevant for throwaway demo logins.
		s.WriteByte(alphabet[int(c)%len(alphabet)])
	}
	return s.String(), nil
}
