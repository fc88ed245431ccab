package gateway

import (
	"unicode"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// checkText refuses control characters in a text field a client sends.
// Services store text verbatim, and a NUL in particular is a valid JSON
// string ("\u0000") that PostgreSQL refuses in a TEXT column: better a 400
// here than a 500 there. newlines allows line breaks and tabs (free text
// such as a cancel reason). Format characters (right-to-left marks, joiners)
// are allowed: names in many scripts need them.
func checkText(field, s string, max int, newlines bool) error {
	if len(s) > max {
		return apperr.E(apperr.Invalid, "", "%s is at most %d bytes", field, max)
	}
	for _, r := range s {
		if newlines && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) {
			return apperr.E(apperr.Invalid, "", "%s must not contain control characters", field)
		}
	}
	return nil
}
