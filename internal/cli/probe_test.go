package cli

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.Write([]byte("ok"))
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		default:
			http.Error(w, "rides: database unreachable", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	for _, c := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{srv.URL + "/readyz"}, 0, ""},
		{[]string{srv.URL + "/down"}, 1, "database unreachable"},
		{[]string{srv.URL + "/slow", "--timeout", "50ms"}, 1, "deadline exceeded"},
		{[]string{"http://127.0.0.1:1/readyz"}, 1, "refused"},
		{[]string{"a", "b"}, 2, "Usage"},
	} {
		code, _, stderr := runCLI(append([]string{"probe"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.inStderr) {
			t.Errorf("probe %v: exit %d, stderr %q; want %d containing %q", c.args, code, stderr, c.code, c.inStderr)
		}
	}
}
