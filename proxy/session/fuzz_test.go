package session

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
)

// FuzzLoad checks SPEC invariant 5 on any Cookie header: Load never panics
// and never fails, and the only sessions it returns are ones sealed with the
// store's key (here: the seeds'), never one made of other bytes (a device
// cookie's value among them). Devices.Find, on the same header, finds the
// seeds' device cookie (alice's at corp) for her alone, and it vouches for
// her account alone.
func FuzzLoad(f *testing.F) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(f, o)
	// Fixed IDs: the fuzzing workers each run this setup again, and must
	// recognise the seeds the coordinator sealed.
	sealed := map[string]bool{}
	seal := func(id string, p idp.Profile) []*http.Cookie {
		s := New(p, idp.Tokens{}, o)
		s.ID = id
		sealed[id] = true
		return saved(f, st, s)
	}
	header := func(cookies []*http.Cookie) string {
		var parts []string
		for _, ck := range cookies {
			parts = append(parts, ck.Name+"="+ck.Value)
		}
		return strings.Join(parts, "; ")
	}
	small := seal("seed-small", testProfile())
	big := testProfile()
	// Random group names, so that deflate cannot shrink them into one cookie.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		big.Groups = append(big.Groups, fmt.Sprintf("group-%016x", rng.Uint64()))
	}
	chunked := seal("seed-chunked", big)
	if len(chunked) < 2 {
		f.Fatalf("want a chunked seed, got %d cookies", len(chunked))
	}
	other := mustStore(f, testOptions(c, key(2)))
	w := httptest.NewRecorder()
	other.Save(w, httptest.NewRequest("GET", "/", nil), New(testProfile(), idp.Tokens{}, o))

	flows := NewFlows(o)
	fw := httptest.NewRecorder()
	flows.Start(fw, nil, LoginFlow, &idp.Flow{State: NewState(), IdP: "company", Redirect: "/x"}, false)
	flowValue := fw.Result().Cookies()[0].Value

	devices := NewDevices(o)
	device := issued(f, devices, "corp\x00alice")
	deviceCookie := o.DeviceName() + "=" + device

	for _, s := range []string{
		header(small), header(chunked), header(w.Result().Cookies()),
		"portcullis=" + flowValue, header(small) + "; " + header(small),
		header(small) + "; portcullis=x; portcullis=y", "portcullis=3~" + small[0].Value,
		"portcullis_1=" + small[0].Value, "", "portcullis=", `portcullis="a"`,
		deviceCookie, "portcullis=" + device, header(small) + "; " + deviceCookie, "portcullis_device=" + small[0].Value,
		"portcullis_device=x; " + deviceCookie + "\n" + deviceCookie,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cookie string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Cookie"] = strings.Split(cookie, "\n")
		s, err := st.Load(r)
		if err != nil {
			t.Fatalf("Load(%q) failed: %v", cookie, err)
		}
		if s != nil && !sealed[s.ID] {
			t.Fatalf("Load(%q) returned session %q, which the store never sealed", cookie, s.ID)
		}
		if s != nil && !c.Now().Before(s.Expires) {
			t.Fatalf("Load(%q) returned an expired session", cookie)
		}
		if d := devices.Find(r, "corp", "corp\x00alice"); d.Nonce != "" &&
			(!d.SignedInTo("corp\x00dn-of-corp\x00alice") || d.SignedInTo("corp\x00dn-of-corp\x00bob")) {
			t.Fatalf("Find(%q) found a device cookie of alice's that does not vouch for her account alone", cookie)
		}
		for _, other := range [][2]string{{"corp", "corp\x00bob"}, {"other", "corp\x00alice"}} {
			if d := devices.Find(r, other[0], other[1]); d.Nonce != "" {
				t.Fatalf("Find(%q) found a device cookie for %q at %s", cookie, other[1], other[0])
			}
		}
	})
}
