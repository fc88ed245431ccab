package rides

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// FuzzDecodeCursor: a client's cursor never panics the decoder; a malformed
// one is Invalid invalid_cursor; one that decodes names a real position
// that encodes back to itself.
func FuzzDecodeCursor(f *testing.F) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, s := range []string{
		cursor{createdAt: 1_700_000_000_000_000, id: "0190a4f1-7c2e-7000-8000-000000000000"}.encode(),
		"", "r1", enc("r1:"), enc("r1:1:"), enc("r1:-5:x"), enc("r2:1:x"), enc("r1:99999999999999999999:x"),
		enc("r1:1:x:y"), enc("r1:+1:x"), enc("r1:0x10:x"), enc("r1:1:' OR 1=1 --"), enc("r1:1:\x00"),
		enc("r1:1:x") + "=", "!!!!", strings.Repeat("A", 201),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeCursor(s)
		if err != nil {
			if apperr.KindOf(err) != apperr.Invalid || apperr.CodeOf(err) != "invalid_cursor" {
				t.Fatalf("%q refused as %v", s, err)
			}
			return
		}
		if s == "" {
			if c != nil {
				t.Fatalf("empty cursor decoded to %v", c)
			}
			return
		}
		if c == nil || c.createdAt < 0 || c.id == "" {
			t.Fatalf("%q decoded to %+v", s, c)
		}
		again, err := decodeCursor(c.encode())
		if err != nil || *again != *c {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, c, c.encode(), again, err)
		}
	})
}
