package proxy

import (
	"net/url"
	"strings"
)

// safeRedirect returns where a browser may be sent after a login or logout:
// rd as an absolute URL on public_url's origin, or that origin's root when rd
// could lead anywhere else (SPEC invariant 6). Anything unusual is refused
// rather than repaired: browsers read `/\host`, tabs and newlines in ways a
// parser here would not.
func (c *compiled) safeRedirect(rd string) string {
	origin := c.publicURL.Scheme + "://" + c.publicURL.Host
	home := origin + "/"
	if rd == "" || len(rd) > maxRedirect {
		return home
	}
	for i := 0; i < len(rd); i++ {
		if b := rd[i]; b <= ' ' || b >= 0x7f || b == '\\' {
			return home
		}
	}
	u, err := url.Parse(rd)
	if err != nil || u.User != nil || u.Opaque != "" {
		return home
	}
	if u.Scheme == "" && u.Host == "" {
		if !strings.HasPrefix(rd, "/") || strings.HasPrefix(rd, "//") {
			return home
		}
		return origin + rd
	}
	if strings.EqualFold(u.Scheme, c.publicURL.Scheme) && strings.EqualFold(u.Host, c.publicURL.Host) {
		rest := u.EscapedPath()
		if !strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, "//") {
			rest = "/"
		}
		if u.RawQuery != "" {
			rest += "?" + u.RawQuery
		}
		return origin + rest
	}
	return home
}

// maxRedirect is the longest rd that safeRedirect follows.
const maxRedirect = 4096

// withRedirect is path with rd as its query, for a page that passes rd on
// to where a login or logout happens. An rd longer than safeRedirect
// follows is left out: it leads to the root all the same, and escaped
// (/, ?, & and % take three bytes each) it would make a Location or a link
// of up to three times its size, more than a front proxy takes in a header
// (nginx's proxy_buffer_size) or the proxy's own listener in a request
// (431 past 64 KB).
func withRedirect(path, rd string) string {
	if rd == "" || len(rd) > maxRedirect {
		return path
	}
	return path + "?rd=" + url.QueryEscape(rd)
}
