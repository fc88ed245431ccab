package rides

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// cursor is a position in a newest-first list of rides: the last ride shown.
// Keyset pagination, so a page is as cheap at ride 10 000 as at ride 1 and
// rides created meanwhile never shift a page.
type cursor struct {
	createdAt int64 // unix microseconds
	id        string
}

const cursorVersion = "r1"

// encode makes the cursor opaque to clients: they must not build one.
func (c cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorVersion + ":" + strconv.FormatInt(c.createdAt, 10) + ":" + c.id))
}

// decodeCursor reads a client's cursor; anything not made by encode is
// Invalid.
func decodeCursor(s string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	bad := apperr.E(apperr.Invalid, "invalid_cursor", "cursor is malformed: pass next_cursor from the previous page")
	if len(s) > 200 {
		return nil, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	parts := strings.SplitN(string(raw), ":", 3)
	if len(parts) != 3 || parts[0] != cursorVersion || parts[2] == "" {
		return nil, bad
	}
	at, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || at < 0 {
		return nil, bad
	}
	return &cursor{createdAt: at, id: parts[2]}, nil
}
