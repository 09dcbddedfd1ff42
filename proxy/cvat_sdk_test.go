package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// sdkStep is one request of testdata/django/sdkclient.py, which sends what
// CVAT's SDK and CLI send, and what came back.
type sdkStep struct {
	Step                string          `json:"step"`
	Method              string          `json:"method"`
	URL                 string          `json:"url"`
	SentAuthorization   string          `json:"sent_authorization"`
	Status              int             `json:"status"`
	ContentType         string          `json:"content_type"`
	Location            string          `json:"location"`
	UploadOffset        string          `json:"upload_offset"`
	SetCookies          []string        `json:"set_cookies"`
	Body                json.RawMessage `json:"body"`
	saw                 cvatSaw
	rqID, requestStatus string
}

// cvatSaw is what testdata/django/cvatviews.py reports of a request.
type cvatSaw struct {
	User          *string           `json:"user"`
	Authenticator *string           `json:"authenticator"`
	IdentityMeta  map[string]string `json:"identity_meta"`
	Cookies       []string          `json:"cookies"`
	Absolute      string            `json:"absolute"`
	Secure        bool              `json:"secure"`
	Path          string            `json:"path"`
}

// runSDK runs sdkclient.py in mode against the proxy at addr and returns
// its requests by step name, and their order.
func runSDK(t *testing.T, addr, mode, secret string, extra ...string) (map[string]sdkStep, []string) {
	t.Helper()
	script, err := filepath.Abs("testdata/django/sdkclient.py")
	if err != nil {
		t.Fatal(err)
	}
	args := slices.Concat(isolatedPython, []string{script, addr, publicOrigin, mode, secret}, extra)
	out, err := exec.Command(debianPython, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("sdkclient.py %s: %v\n%s%s", mode, err, out, stderr)
	}
	steps := map[string]sdkStep{}
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var s sdkStep
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("sdkclient.py: %v in %q", err, sc.Text())
		}
		var body struct {
			Saw    cvatSaw `json:"saw"`
			RqID   string  `json:"rq_id"`
			ID     string  `json:"id"`
			Status string  `json:"status"`
		}
		if json.Unmarshal(s.Body, &body) == nil {
			s.saw, s.rqID, s.requestStatus = body.Saw, body.RqID, body.Status
			if s.rqID == "" {
				s.rqID = body.ID
			}
		}
		steps[s.Step] = s
		order = append(order, s.Step)
	}
	return steps, order
}

// cvatProfileFor is deploy/cvat/portcullis.yaml, the shipped CVAT profile,
// in front of upstream, with rules put first in its rules.
func cvatProfileFor(t *testing.T, upstream, rules string) *Handler {
	t.Helper()
	b, err := os.ReadFile("../deploy/cvat/portcullis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.NewReplacer(
		"${CVAT_PUBLIC_URL}", publicOrigin,
		"${OIDC_ISSUER}", "http://127.0.0.1:1/",
		"${PORTCULLIS_SESSION_KEY}", testKey,
		`"http://traefik:8080"`, upstream,
	).Replace(string(b))
	if !strings.Contains(y, "url: "+upstream) {
		t.Fatal("deploy/cvat/portcullis.yaml has no upstream url to replace")
	}
	if rules != "" {
		i := strings.Index(y, "\nrules:\n")
		if i < 0 {
			t.Fatal("deploy/cvat/portcullis.yaml has no rules")
		}
		i += len("\nrules:\n")
		y = y[:i] + rules + y[i:]
	}
	return newTestHandler(t, y)
}

// cvatGuideRule is the rule named name of docs/cvat.md, the rules: block
// that holds it alone, as it is to be put into the profile's rules.
func cvatGuideRule(t *testing.T, name string) string {
	t.Helper()
	guide, err := os.ReadFile("../docs/cvat.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\nrules:\n(  - name: " + regexp.QuoteMeta(name) + "\n.*?)```").FindSubmatch(guide)
	if m == nil {
		t.Fatalf("docs/cvat.md has no yaml block starting with the rule %s", name)
	}
	return string(m[1])
}

// CVAT's SDK and CLI through the shipped CVAT profile, against CVAT's
// Python stack (Django REST framework with CVAT's authentication classes,
// under uvicorn as cvat_server runs it): which of their ways to sign in
// work, and that what CVAT builds from the request (the TUS upload's
// Location, build_absolute_uri) leads back through the proxy, whatever
// forwarded headers the client sends.
func TestCVATSDKThroughProxy(t *testing.T) {
	if out, err := exec.Command(debianPython, slices.Concat(isolatedPython, []string{"-c", "import rest_framework, urllib3"})...).CombinedOutput(); err != nil {
		t.Fatalf("Debian's Django REST framework or urllib3 is missing (apt-get install python3-djangorestframework python3-urllib3, as test/run.sh does): %v %s", err, out)
	}
	app := startDjangoApp(t, "uvicorn", "cvat", "LAB_DB="+filepath.Join(t.TempDir(), "cvat.sqlite3"))
	shipped := (&fixture{h: cvatProfileFor(t, app, "")}).serve(t)

	// An SDK signed in by a credential header: every call after the first
	// is bypassed, reaches Django with no identity header and no session
	// cookie, and Django knows the user by the credential.
	signedIn := func(t *testing.T, steps map[string]sdkStep, order []string, authenticator string) {
		t.Helper()
		want := []string{"about before sign-in", "about", "self", "upload start", "tus create", "tus offset", "tus chunk", "tus offset after", "upload finish", "wait for completion", "wait for an export"}
		if !slices.Equal(slices.DeleteFunc(slices.Clone(order), func(s string) bool { return s == "password sign-in" }), want) {
			t.Fatalf("the SDK made %q, want %q", order, want)
		}
		status := map[string]int{"about": 200, "self": 200, "upload start": 202, "tus create": 201, "tus offset": 200, "tus chunk": 204, "tus offset after": 200, "upload finish": 202, "wait for completion": 200, "wait for an export": 200}
		for _, name := range want[1:] {
			s := steps[name]
			if s.Status != status[name] {
				t.Errorf("%s: %s %s: %d %s, want %d", name, s.Method, s.URL, s.Status, s.Body, status[name])
			}
		}
		for _, name := range []string{"self", "upload start", "tus create", "upload finish", "wait for completion", "wait for an export"} {
			saw := steps[name].saw
			if saw.User == nil || *saw.User != "alice" || saw.Authenticator == nil || *saw.Authenticator != authenticator {
				t.Errorf("%s: Django's user %v by %v, want alice by %s", name, saw.User, saw.Authenticator, authenticator)
			}
			if len(saw.IdentityMeta) != 0 || len(saw.Cookies) != 0 {
				t.Errorf("%s: Django got identity headers %v and cookies %v, want none", name, saw.IdentityMeta, saw.Cookies)
			}
			if !strings.HasPrefix(saw.Absolute, publicOrigin+"/api/") || !saw.Secure {
				t.Errorf("%s: build_absolute_uri() %s, is_secure() %v; want them at %s", name, saw.Absolute, saw.Secure, publicOrigin)
			}
		}
		// CVAT's TUS Location, which the SDK follows with its
		// Authorization, is at public_url.
		if loc := steps["tus create"].Location; !regexp.MustCompile(`^` + regexp.QuoteMeta(publicOrigin) + `/api/tasks/1/data/[0-9a-f-]{36}$`).MatchString(loc) {
			t.Errorf("TUS Location %q, want %s/api/tasks/1/data/<file id>", loc, publicOrigin)
		}
		if got := steps["tus offset after"].UploadOffset; got != "20480" {
			t.Errorf("after the PATCH, HEAD says Upload-Offset %q, want 20480", got)
		}
		// wait_for_completion's request id, quoted whole into the path,
		// reaches Django as the id CVAT gave.
		if s := steps["wait for completion"]; s.rqID != steps["upload finish"].rqID || s.requestStatus != "finished" {
			t.Errorf("polled request %q (%s), want %q", s.rqID, s.requestStatus, steps["upload finish"].rqID)
		}
		if s, want := steps["wait for an export"], "export:task-1-dataset-in-CVAT_for_images_1@1-format-by-1"; s.rqID != want {
			t.Errorf("polled request %q, want %q", s.rqID, want)
		}
	}

	// Client.__init__'s version check, before any credential: the SDK
	// logs "Failed to retrieve server API version" and goes on.
	versionCheckRefused := func(t *testing.T, steps map[string]sdkStep) {
		t.Helper()
		if s := steps["about before sign-in"]; s.Status != 401 || !strings.HasPrefix(s.ContentType, "application/json") {
			t.Errorf("GET /api/server/about without credentials: %d %s, want the proxy's 401 JSON", s.Status, s.ContentType)
		}
	}

	t.Run("personal access token", func(t *testing.T) {
		steps, order := runSDK(t, shipped, "pat", "pat-of-alice-1f0e8c2a")
		versionCheckRefused(t, steps)
		signedIn(t, steps, order, "AccessTokenAuthentication")
	})
	t.Run("legacy API key", func(t *testing.T) {
		steps, order := runSDK(t, shipped, "token", "5ba1c0ffee5ba1c0ffee5ba1c0ffee5ba1c0ffee")
		versionCheckRefused(t, steps)
		signedIn(t, steps, order, "TokenAuthentication")
	})
	t.Run("HTTP Basic", func(t *testing.T) {
		steps, order := runSDK(t, shipped, "basic", "alice:alice-password")
		versionCheckRefused(t, steps)
		signedIn(t, steps, order, "BasicAuthentication")
	})
	t.Run("personal access token, forwarded headers spoofed", func(t *testing.T) {
		steps, order := runSDK(t, shipped, "pat", "pat-of-alice-1f0e8c2a", "--spoof")
		versionCheckRefused(t, steps)
		signedIn(t, steps, order, "AccessTokenAuthentication")
	})
	t.Run("password sign-in is closed", func(t *testing.T) {
		// POST /api/auth/login carries no Authorization: it needs a
		// session, and the SDK gets 401 JSON (an ApiException).
		steps, order := runSDK(t, shipped, "password", "alice:alice-password")
		s := steps["password sign-in"]
		if s.Status != 401 || !strings.HasPrefix(s.ContentType, "application/json") || len(s.SetCookies) != 0 {
			t.Errorf("POST /api/auth/login: %d %s %s, cookies %q; want the proxy's 401 JSON", s.Status, s.ContentType, s.Body, s.SetCookies)
		}
		if len(order) != 2 {
			t.Errorf("the SDK went on after a failed sign-in: %q", order)
		}
	})

	// The control: the same client straight at CVAT's Django, as from
	// inside CVAT's network, gets its links at the host it names.
	t.Run("control: straight to Django, forwarded headers spoofed", func(t *testing.T) {
		steps, _ := runSDK(t, strings.TrimPrefix(app, "http://"), "pat", "pat-of-alice-1f0e8c2a", "--spoof")
		if loc := steps["tus create"].Location; !strings.HasPrefix(loc, "http://evil.example/") {
			t.Errorf("straight to Django, the spoofed TUS Location is %q, want it at http://evil.example/: the control no longer shows what the proxy prevents", loc)
		}
	})
	// docs/cvat.md's opt-in rules, for deployments that keep CVAT's
	// passwords and want the SDK's version check answered.
	optIn := (&fixture{h: cvatProfileFor(t, app, cvatGuideRule(t, "cvat-password-login")+cvatGuideRule(t, "cvat-server-about"))}).serve(t)
	t.Run("password sign-in, opted in", func(t *testing.T) {
		steps, order := runSDK(t, optIn, "password", "alice:alice-password")
		s := steps["password sign-in"]
		if s.Status != 200 || !slices.Contains(s.SetCookies, "sessionid") || !slices.Contains(s.SetCookies, "csrftoken") {
			t.Fatalf("POST /api/auth/login: %d %s, cookies %q; want CVAT's key with sessionid and csrftoken", s.Status, s.Body, s.SetCookies)
		}
		if s := steps["about before sign-in"]; s.Status != 200 || s.saw.User != nil {
			t.Errorf("GET /api/server/about without credentials: %d, user %v; want CVAT's anonymous answer", s.Status, s.saw.User)
		}
		// The SDK sends the sessionid and csrftoken it got with its Token:
		// the proxy keeps them from CVAT (upstream.logout_cookies), and
		// CVAT knows the user by the key.
		signedIn(t, steps, order, "TokenAuthentication")
	})
}
