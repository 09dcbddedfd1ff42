package session

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/securecookie"
)

// DeviceLifetime is how long a device cookie vouches for its browser after
// the login that set it. Every password login renews it, so it only has to
// outlast the longest time a user goes without signing in (a leave, a
// project that resumes), and session.lifetime, which says how often users
// must sign in, has no bearing on it. A year stays under the 400 days
// Chromium caps a cookie's Max-Age at. A stolen one buys no session, only
// its own few guesses (the proxy's failure limits).
const DeviceLifetime = 365 * 24 * time.Hour

const (
	// deviceCodecName is bound into every device seal, distinct from
	// sessions' and flows', so that no other cookie opens as one.
	deviceCodecName = "portcullis device"
	// deviceSuffix follows the session cookie's base name.
	deviceSuffix = "_device"
	// securePrefix makes browsers accept a cookie only when it is Secure
	// and set over https. A device cookie cannot have __Host-, which
	// demands Path=/: it is kept to the login form's path.
	securePrefix = "__Secure-"
	// deviceWireVersion changes when the sealed layout does. Version 1
	// named no account: its cookies vouch for nothing.
	deviceWireVersion = 2
)

// Devices seals and opens device cookies (OWASP's "Slow Down Online
// Guessing Attacks with Device Cookies"): a browser that signed in with a
// password as a user gets one, and a later password login as that user,
// to the same account, from that browser is counted against the cookie's
// own failure limit
// rather than the one every client of that username shares, so that
// someone failing guesses as the user elsewhere does not lock the user's
// own browser out.
type Devices struct {
	opts   Options
	aud    string // opts.audienceTag()
	codecs []securecookie.Codec
	err    error // why codecs could not be built, reported by Issue
}

// wireDevice is the sealed form of a device cookie.
type wireDevice struct {
	V   int    `json:"v"`
	IdP string `json:"i"`
	// User is userTag of the caller's key of the username: the normalized
	// name can be long (NFKC spells some characters out in 18), its hash
	// is not.
	User string `json:"u"`
	// Account is userTag of the caller's key of the account the login
	// signed in to (an LDAP entry's DN): a username the limits read as
	// this one can find another account, another person's.
	Account string `json:"d"`
	Nonce   string `json:"n"`
	Expires int64  `json:"e"`
	Aud     string `json:"a,omitempty"`
}

// NewDevices builds the device cookie keeper. Keys are checked by
// NewCookieStore; with unusable keys Issue fails and no cookie opens.
func NewDevices(o Options) *Devices {
	d := &Devices{opts: o, aud: o.audienceTag()}
	if d.err = checkKeys(o.Keys); d.err == nil {
		d.codecs, d.err = codecs(o.Keys, "device", DeviceLifetime, 4096, securecookie.JSONEncoder{})
	}
	return d
}

// DeviceName is the device cookie's full name: the session cookie's base
// name and _device, with __Secure- when Secure.
func (o Options) DeviceName() string {
	if o.Secure {
		return securePrefix + o.base() + deviceSuffix
	}
	return o.base() + deviceSuffix
}

// userTag stands for a username's key in a device cookie.
func userTag(user string) string {
	sum := sha256.Sum256([]byte(user))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Issue sets a fresh device cookie, with a new nonce, for user at IdP
// idpID, who signed in to account, sent back only to path (the login
// form's). user is the caller's key of the username, normalized as its
// failure limit compares them, and account its key of the account.
// SameSite=Strict: the form posts from the proxy's own page, and no other
// site's request needs it.
func (d *Devices) Issue(w http.ResponseWriter, path, idpID, user, account string) error {
	if d.err != nil {
		return fmt.Errorf("device cookie: %w", d.err)
	}
	sealed, err := d.codecs[0].Encode(deviceCodecName, wireDevice{
		V: deviceWireVersion, IdP: idpID, User: userTag(user), Account: userTag(account), Nonce: randomToken(),
		Expires: d.opts.now().Add(DeviceLifetime).Unix(), Aud: d.aud,
	})
	if err != nil {
		return fmt.Errorf("device cookie: seal: %w", err)
	}
	http.SetCookie(w, &http.Cookie{
		Name: d.opts.DeviceName(), Value: sealed, Path: path, MaxAge: int(DeviceLifetime / time.Second),
		HttpOnly: true, Secure: d.opts.Secure, SameSite: http.SameSiteStrictMode,
	})
	return nil
}

// Device is a browser's device cookie for a username, as Find opened it.
type Device struct {
	// Nonce identifies the cookie, "" for none.
	Nonce   string
	account string // userTag of the account its login signed in to
}

// SignedInTo reports whether d's login signed in to account (the caller's
// key of it, as given to Issue): the cookie vouches for that account only.
func (d Device) SignedInTo(account string) bool {
	return d.Nonce != "" && subtle.ConstantTimeCompare([]byte(d.account), []byte(userTag(account))) == 1
}

// Find is r's device cookie for user at IdP idpID, or none (Nonce "")
// when r carries none that opens with the session keys, was sealed for
// this deployment, has not expired and names that IdP and user. Of several
// values under the name (another site of the domain can add its own, but
// not remove the browser's), the first that does is taken: a cookie added
// that way vouches for nobody it was not issued to.
func (d *Devices) Find(r *http.Request, idpID, user string) Device {
	if d.err != nil {
		return Device{}
	}
	var j jar
	j.collectExact(r.Header["Cookie"], d.opts.DeviceName())
	tag := userTag(user)
	now := d.opts.now().Unix()
	for _, v := range j.values[0][:j.count[0]] {
		var w wireDevice
		if securecookie.DecodeMulti(deviceCodecName, v, &w, d.codecs...) != nil {
			continue
		}
		if w.V == deviceWireVersion && w.Aud == d.aud && w.IdP == idpID && now < w.Expires && w.Nonce != "" && w.Account != "" &&
			subtle.ConstantTimeCompare([]byte(w.User), []byte(tag)) == 1 {
			return Device{Nonce: w.Nonce, account: w.Account}
		}
	}
	return Device{}
}
