package gateway

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

func TestDecode(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	cases := []struct {
		name, ct, in string
		kind         apperr.Kind
		detail       string
	}{
		{"ok", "application/json", `{"name":"a","n":1}`, 0, ""},
		{"charset ok", "application/json; charset=utf-8", `{"name":"a"}`, 0, ""},
		{"no content type", "", `{"name":"a"}`, 0, ""},
		{"form", "application/x-www-form-urlencoded", `name=a`, apperr.Invalid, "application/json"},
		{"empty", "application/json", ``, apperr.Invalid, "empty"},
		{"syntax", "application/json", `{"name":}`, apperr.Invalid, "malformed JSON at byte"},
		{"cut short", "application/json", `{"name":"a"`, apperr.Invalid, "middle"},
		{"type", "application/json", `{"n":"x"}`, apperr.Invalid, `field "n" must be a number`},
		{"array", "application/json", `[]`, apperr.Invalid, "must be a JSON object"},
		{"unknown", "application/json", `{"role":"admin"}`, apperr.Invalid, `unknown field "role"`},
		{"two objects", "application/json", `{} {}`, apperr.Invalid, "single JSON object"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("POST", "/", strings.NewReader(c.in))
		if c.ct != "" {
			r.Header.Set("Content-Type", c.ct)
		}
		var b body
		err := decode(r, &b)
		if c.kind == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		e := apperr.As(err)
		if e.Kind != c.kind || !strings.Contains(e.Message, c.detail) {
			t.Errorf("%s: got %s %q, want %s containing %q", c.name, e.Kind, e.Message, c.kind, c.detail)
		}
	}
}
