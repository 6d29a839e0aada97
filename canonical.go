package keybrake

import (
	"strings"
)

// MaxTargetLength bounds the request target the proxy will look at.
const MaxTargetLength = 4096

// CanonicalTarget splits a raw HTTP request target (r.RequestURI, exactly as
// the client sent it) into path and query, and refuses any target that some
// normaliser on the way to the vendor could read differently from the way
// Keybrake matched it. The allow-list is checked against the literal bytes
// returned here, so "canonical or rejected" is what keeps
// /v1/payment_intents/../refunds from matching a payment_intents rule.
//
// Path segments may contain only RFC 3986 unreserved characters
// (A-Z a-z 0-9 - . _ ~). That rules out percent-encoding of any kind (%2e,
// %2f, %5c, and even %41, which a normaliser would decode to "A"), empty
// segments (// and trailing slashes), dot segments, backslashes, semicolons
// (path parameters), control bytes and non-ASCII. Absolute-form and
// asterisk-form targets do not start with "/" and are refused too.
func CanonicalTarget(target string) (path, query string, err error) {
	if target == "" || target[0] != '/' {
		return "", "", Errorf(CodeNonCanonicalPath, "request target must be an origin-form path starting with /")
	}
	if len(target) > MaxTargetLength {
		return "", "", Errorf(CodeNonCanonicalPath, "request target is longer than %d bytes", MaxTargetLength)
	}
	path, query, hasQuery := strings.Cut(target, "?")
	if err := CheckCanonicalPath(path); err != nil {
		return "", "", err
	}
	if hasQuery {
		if query == "" {
			return "", "", Errorf(CodeNonCanonicalPath, "empty query string (a bare ?) is not canonical")
		}
		if err := checkQuery(query); err != nil {
			return "", "", err
		}
	}
	return path, query, nil
}

// CheckCanonicalPath reports whether path (no query) is canonical: "/" then
// one or more non-empty segments of unreserved characters, none of them made
// of dots only.
func CheckCanonicalPath(path string) error {
	if path == "" || path[0] != '/' {
		return Errorf(CodeNonCanonicalPath, "path must start with /")
	}
	if path == "/" {
		return Errorf(CodeNonCanonicalPath, "the root path / is not a vendor endpoint")
	}
	rest := path[1:]
	for {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "" {
			if more {
				return Errorf(CodeNonCanonicalPath, "empty path segment (//) is not canonical")
			}
			return Errorf(CodeNonCanonicalPath, "trailing slash is not canonical")
		}
		if strings.Trim(seg, ".") == "" {
			return Errorf(CodeNonCanonicalPath, "dot segment %q is not canonical", seg)
		}
		for i := 0; i < len(seg); i++ {
			if !isUnreserved(seg[i]) {
				return Errorf(CodeNonCanonicalPath, "path byte %s is not allowed (only A-Z a-z 0-9 - . _ ~ in path segments)", describeByte(seg[i]))
			}
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

func checkQuery(q string) error {
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case isUnreserved(c):
		case c == '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return Errorf(CodeNonCanonicalPath, "malformed percent-encoding in query")
			}
			i += 2
		case strings.IndexByte("!$&'()*+,=:@/?[]", c) >= 0:
		default:
			return Errorf(CodeNonCanonicalPath, "query byte %s is not allowed", describeByte(c))
		}
	}
	return nil
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// describeByte names a byte for an error message without echoing control
// characters into logs or terminals.
func describeByte(c byte) string {
	if c >= 0x21 && c < 0x7f {
		return "'" + string(c) + "'"
	}
	const hexdigits = "0123456789ABCDEF"
	return "0x" + string([]byte{hexdigits[c>>4], hexdigits[c&0xf]})
}
