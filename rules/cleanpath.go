package rules

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Reasons CleanPath refuses a path; the proxy answers such a request with
// 400 and the reason as the message.
var (
	errNotAbsolute    = errors.New("path must start with /")
	errBadEscape      = errors.New("invalid percent-encoding in path")
	errDoubleEscape   = errors.New("double percent-encoding in path")
	errEncodedSlash   = errors.New("encoded slash in path")
	errBackslash      = errors.New("backslash in path")
	errControl        = errors.New("control character in path")
	errSemicolon      = errors.New("semicolon in path")
	errFragment       = errors.New("fragment or query in path")
	errInvalidUnicode = errors.New("invalid UTF-8 in path")
)

// CleanPath turns the escaped path of a request, as the client sent it,
// into the decoded, normalized path that rules match and that the upstream gets:
// escapes decoded, runs of / collapsed, . and .. resolved (never above the
// root), a trailing slash kept. Anything two servers could read differently
// is refused instead: encoded slashes, backslashes, control characters,
// semicolons (path parameters), double encoding and invalid UTF-8.
func CleanPath(escapedPath string) (string, error) {
	if escapedPath == "" || escapedPath[0] != '/' {
		return "", errNotAbsolute
	}
	decoded, err := unescapePath(escapedPath)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(decoded) {
		// Overlong forms such as %C0%AE (a dot) end up here.
		return "", errInvalidUnicode
	}
	if isClean(decoded) {
		return decoded, nil
	}
	return resolveDots(decoded), nil
}

// unescapePath checks every byte of p and decodes its percent-escapes. It
// returns p itself when there is nothing to decode.
func unescapePath(p string) (string, error) {
	escapes := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' {
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", errBadEscape
			}
			c = unhex(p[i+1])<<4 | unhex(p[i+2])
			if c == '/' {
				return "", errEncodedSlash
			}
			escapes++
			i += 2
		} else if c == '#' || c == '?' {
			// An escaped path cannot hold these raw; the caller passed
			// a query or fragment with the path.
			return "", errFragment
		}
		if err := checkPathByte(c); err != nil {
			return "", err
		}
	}
	if escapes == 0 {
		return p, nil
	}
	var b strings.Builder
	b.Grow(len(p) - 2*escapes)
	for i := 0; i < len(p); i++ {
		if p[i] == '%' {
			b.WriteByte(unhex(p[i+1])<<4 | unhex(p[i+2]))
			i += 2
			continue
		}
		b.WriteByte(p[i])
	}
	decoded := b.String()
	// Every % left after decoding came from %25. Followed by two hex digits
	// it is another escape (%252e, or %25%32%65): an upstream, or a filter in
	// front of it, that decodes twice would see another path than the rules.
	for i := strings.IndexByte(decoded, '%'); i >= 0; {
		if i+2 < len(decoded) && isHex(decoded[i+1]) && isHex(decoded[i+2]) {
			return "", errDoubleEscape
		}
		next := strings.IndexByte(decoded[i+1:], '%')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return decoded, nil
}

// checkPathByte refuses the bytes that are unsafe in a path whether they
// come raw or percent-encoded.
func checkPathByte(c byte) error {
	switch {
	case c == '\\':
		// Some servers (IIS, some Java containers) read \ as /.
		return errBackslash
	case c < 0x20 || c == 0x7f:
		return errControl
	case c == ';':
		// Tomcat-style path parameters (/public/..;/secret): servers differ
		// on whether they belong to the segment, so refuse rather than guess.
		return errSemicolon
	}
	return nil
}

// isClean reports whether p (decoded, starting with /) has no empty, . or ..
// segment, so that it is already its own normal form.
func isClean(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		rest := p[i+1:]
		switch {
		case rest == "" && i > 0:
			// A trailing slash is kept; only "/" itself ends right here
			// when i == 0, and that is clean too.
		case strings.HasPrefix(rest, "/"):
			return false
		case rest == "." || strings.HasPrefix(rest, "./"):
			return false
		case rest == ".." || strings.HasPrefix(rest, "../"):
			return false
		}
	}
	return true
}

// resolveDots collapses empty segments and resolves . and .. in the decoded
// path p. The result keeps a trailing slash when p had one or ended in a dot
// segment (/a/b/.. names the directory /a/).
func resolveDots(p string) string {
	segments := make([]string, 0, strings.Count(p, "/"))
	trailing := false
	for _, seg := range strings.Split(p[1:], "/") {
		trailing = false
		switch seg {
		case "":
			trailing = true
		case ".":
			trailing = true
		case "..":
			trailing = true
			if len(segments) > 0 {
				segments = segments[:len(segments)-1]
			}
		default:
			segments = append(segments, seg)
		}
	}
	if len(segments) == 0 {
		return "/"
	}
	out := "/" + strings.Join(segments, "/")
	if trailing {
		out += "/"
	}
	return out
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
