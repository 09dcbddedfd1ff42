package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package (installed by test/run.sh)
// puts the browser; $PORTCULLIS_CHROMIUM overrides it.
const chromiumPath = "/usr/bin/chromium"

// stepTimeout bounds one browser step (a navigation, a login round trip).
const stepTimeout = 20 * time.Second

// newChromium starts a headless Chromium for the test, with the options
// extra besides the usual ones, and returns its context; the browser closes
// when the test ends. A missing browser fails the test: browser tests are
// part of the suite, not optional.
func newChromium(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := os.Getenv("PORTCULLIS_CHROMIUM")
	if path == "" {
		path = chromiumPath
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("chromium not found (%v): run the tests with test/run.sh, which installs Debian's chromium, or set PORTCULLIS_CHROMIUM", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// Tests run as root in containers, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1024, 768),
	)
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	start := time.Now()
	// The first Do starts the browser and binds it to ctx, which must have
	// no deadline; steps get theirs from a child context (see step).
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v", path, err)
	}
	t.Logf("chromium started in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		// Close the browser before the user data directory is removed.
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		if err := chromedp.Cancel(cctx); err != nil {
			t.Logf("closing chromium: %v", err)
		}
		cancel()
		cancelAlloc()
	})
	return ctx
}

// newTab opens a tab in a fresh browser context of browser: its own cookies,
// as a private window has, so that each user logs in from scratch.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("open a tab: %v", err)
	}
	t.Cleanup(cancel)
	return ctx
}

// step runs browser actions with a deadline, failing the test with what the
// step was meant to do.
func step(t *testing.T, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		loc, _ := chromedp.Run(tab, chromedp.Location())
		t.Fatalf("%s (page %s): %v", what, loc, err)
	}
}

// value runs one browser action that returns a value, with a deadline.
func value[T any](t *testing.T, tab context.Context, what string, action chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// artifactDir is where a test leaves screenshots: under $PORTCULLIS_ARTIFACTS
// when set (CI keeps them), else in the test's temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("PORTCULLIS_ARTIFACTS")
	if root == "" {
		return t.TempDir()
	}
	dir := filepath.Join(root, regexp.MustCompile(`[^A-Za-z0-9._-]+`).ReplaceAllString(t.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves what the tab shows as name (a .png) in dir.
func screenshot(t *testing.T, tab context.Context, dir, name string) {
	t.Helper()
	png := value(t, tab, "screenshot "+name, chromedp.CaptureScreenshot())
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
