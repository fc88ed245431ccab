package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWriteTimeout: an ordinary response that outlives the write timeout
// is cut off, a streaming RPC is not.
func TestWriteTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 6 { // 600 ms of writing, past the 200 ms timeout
			_, _ = io.WriteString(w, "tick\n")
			http.NewResponseController(w).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	go func() { done <- Serve(ctx, ln, Config{Handler: slow, WriteTimeout: 200 * time.Millisecond}) }()
	defer func() { cancel(); <-done }()

	get := func(ct string) (string, error) {
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/x", strings.NewReader("{}"))
		req.Header.Set("Content-Type", ct)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	if body, err := get("application/connect+proto"); err != nil || strings.Count(body, "tick") != 6 {
		t.Fatalf("streaming RPC: %d ticks, %v; want all 6", strings.Count(body, "tick"), err)
	}
	if body, err := get("application/json"); err == nil && strings.Count(body, "tick") == 6 {
		t.Fatal("an ordinary response outlived the write timeout")
	}
}
