package twilio

import (
	"unicode/utf8"
)

// Encoding is how an SMS body travels.
type Encoding string

const (
	GSM7 Encoding = "GSM-7"
	UCS2 Encoding = "UCS-2"
)

// The GSM 03.38 default alphabet (one septet each) and its extension table
// (an escape plus one septet: two each).
const (
	gsmBasic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
		"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	gsmExtension = "\f^{}\\[~]|€"
)

var gsmUnits = func() map[rune]int {
	m := map[rune]int{}
	for _, r := range gsmBasic {
		m[r] = 1
	}
	for _, r := range gsmExtension {
		m[r] = 2
	}
	return m
}()

// Segment sizes: a single message, and each part of a concatenated one
// (the rest of a part carries the concatenation header).
const (
	gsmSingle  = 160
	gsmPart    = 153
	ucs2Single = 70
	ucs2Part   = 67
)

// Segments counts the SMS segments of a body the way carriers split it:
// GSM-7 when every character is in the GSM alphabet (extension characters
// take two septets), otherwise UCS-2 (characters outside the Basic
// Multilingual Plane, such as most emoji, take two code units). A character
// is never split across two parts, so a long body may need one segment more
// than its length divided by the part size. An empty body is one segment.
// ok is false for a body that is not valid UTF-8.
func Segments(body string) (n int, enc Encoding, ok bool) {
	if !utf8.ValidString(body) {
		return 0, "", false
	}
	enc = GSM7
	for _, r := range body {
		if gsmUnits[r] == 0 {
			enc = UCS2
			break
		}
	}
	units := func(r rune) int {
		if enc == GSM7 {
			return gsmUnits[r]
		}
		if r > 0xFFFF {
			return 2 // a UTF-16 surrogate pair
		}
		return 1
	}
	single, part := gsmSingle, gsmPart
	if enc == UCS2 {
		single, part = ucs2Single, ucs2Part
	}
	total := 0
	for _, r := range body {
		total += units(r)
	}
	if total <= single {
		return 1, enc, true
	}
	n, used := 1, 0
	for _, r := range body {
		u := units(r)
		if used+u > part {
			n++
			used = 0
		}
		used += u
	}
	return n, enc, true
}
