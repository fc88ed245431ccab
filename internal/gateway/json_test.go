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
		{"nested 32 deep", "application/json", `{"x":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}`, apperr.Invalid, `unknown field "x"`},
		{"nested 33 deep", "application/json", `{"x":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`, apperr.Invalid, "deeper than 32"},
		{"nested 1000 deep, unclosed", "application/json", strings.Repeat(`{"a":`, 1000), apperr.Invalid, "deeper than 32"},
		{"brackets inside strings do not count", "application/json", `{"name":"` + strings.Repeat("[{", 100) + `\\\"` + `"}`, 0, ""},
		{"escaped quote does not end a string", "application/json", `{"name":"\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}`, 0, ""},
		{"over 1 MiB", "application/json", `{"name":"` + strings.Repeat("x", maxBody) + `"}`, apperr.TooLarge, "exceeds"},
		{"long unknown field is clipped", "application/json", `{"` + strings.Repeat("f", 5000) + `":1}`, apperr.Invalid, "…"},
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
			t.Errorf("%s: got %s %.100q, want %s containing %q", c.name, e.Kind, e.Message, c.kind, c.detail)
		}
		if len(e.Message) > 300 {
			t.Errorf("%s: a %d-byte message echoes the client's input", c.name, len(e.Message))
		}
	}
}

func TestCheckText(t *testing.T) {
	for _, c := range []struct {
		in       string
		newlines bool
		ok       bool
	}{
		{"Ada Lovelace", false, true},
		{"\u202eevil\u202c", false, true}, // bidi controls are format characters, allowed
		{"名前 😀", false, true},
		{"' OR 1=1 --", false, true},
		{"a\x00b", false, false},
		{"a\x1bb", false, false},
		{"a\u0085b", false, false}, // C1 control
		{"line\nbreak", false, false},
		{"line\nbreak\ttab", true, true},
		{"a\x00b", true, false},
		{strings.Repeat("x", 100), false, true},
		{strings.Repeat("x", 101), false, false},
	} {
		err := checkText("f", c.in, 100, c.newlines)
		if (err == nil) != c.ok {
			t.Errorf("checkText(%q, newlines=%v): %v, want ok=%v", c.in, c.newlines, err, c.ok)
		}
		if err != nil && apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("checkText(%q): %v", c.in, err)
		}
	}
}
