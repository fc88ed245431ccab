package gateway

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// FuzzDecode drives the public API's JSON decoding with the bodies of
// sign-up, ride requests and location pings: it never panics, and every
// refusal is Invalid (400) or TooLarge (413), never an internal error.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"role":"rider","name":"Ada","email":"ada@example.com","password":"correct horse"}`,
		`{"role":"driver","name":"Grace","email":"g@example.com","password":"longenough","vehicle":{"make":"Toyota","model":"Prius","plate":"7ABC123","color":"blue"}}`,
		`{"pickup":{"lat":37.79,"lng":-122.39},"dropoff":{"lat":37.75,"lng":-122.44},"payment_method":"card_declined","quote_id":"q1"}`,
		`{"lat":37.79,"lng":-122.39,"recorded_at":"2026-01-02T03:04:05Z"}`,
		`{"lat":1e999,"lng":-0}`,
		`{"recorded_at":"not a time"}`,
		`{"pickup":{"lat":"37"}}`,
		`{"vehicle":[]}`,
		`{"name":"\u0000\u202e"}`,
		`{"role":"rider"} trailing`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
		`{"a":` + strings.Repeat("[", 40),
		`"\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["`,
		`{"status":"completed","fare":{"amount":0}}`,
		"\xff\xfe{}",
		``,
		`null`,
	} {
		for shape := range uint8(3) {
			f.Add([]byte(seed), shape)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, shape uint8) {
		r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var err error
		switch shape % 3 {
		case 0:
			var in signupJSON
			if err = decode(r, &in); err == nil {
				err = in.check()
			}
		case 1:
			var in rideRequestJSON
			if err = decode(r, &in); err == nil {
				_, _, err = in.check()
			}
		case 2:
			var in locationJSON
			if err = decode(r, &in); err == nil {
				_, err = in.pointJSON.proto("location")
			}
		}
		if err == nil {
			if checkDepth(body, maxDepth) != nil {
				t.Fatalf("accepted a body nested deeper than %d", maxDepth)
			}
			return
		}
		e := apperr.As(err)
		if e.Kind != apperr.Invalid && e.Kind != apperr.TooLarge {
			t.Fatalf("refused as %s (%v), want invalid or too large", e.Kind, err)
		}
		if !utf8.ValidString(e.Message) {
			t.Fatalf("message is not UTF-8: %q", e.Message)
		}
		if len(e.Message) > 300 {
			t.Fatalf("a %d-byte message echoes the body", len(e.Message))
		}
	})
}

// FuzzIdempotencyKey: a key is accepted only if it is 1 to 255 bytes of
// printable ASCII without spaces; anything else is Invalid, never a panic.
func FuzzIdempotencyKey(f *testing.F) {
	for _, seed := range []string{"happy-1", "", " ", "' OR 1=1 --", "a\x00b", "ключ", strings.Repeat("k", 255), strings.Repeat("k", 256), "\u202ekey", "k\r\nX-Evil: 1", "~!@#$%^&*()_+"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, key string) {
		r := httptest.NewRequest("POST", "/v1/rides", nil)
		r.Header["Idempotency-Key"] = []string{key}
		got, err := idempotencyKey(r)
		if err != nil {
			if apperr.KindOf(err) != apperr.Invalid {
				t.Fatalf("refused %q as %v", key, err)
			}
			return
		}
		if got != key || len(key) == 0 || len(key) > idempotencyKeyMax {
			t.Fatalf("accepted %q as %q", key, got)
		}
		for i := 0; i < len(key); i++ {
			if key[i] < 0x21 || key[i] > 0x7e {
				t.Fatalf("accepted %q with byte %#x", key, key[i])
			}
		}
	})
}
