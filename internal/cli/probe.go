package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

const probeSummary = `Asks a process whether it is healthy: exits 0 when URL answers 200 OK within
--timeout, and 1 otherwise, printing the process's own reason. It is for
container runtimes whose health checks run a command inside the container
(Docker, Compose): the image has no shell and no curl. Kubernetes needs none of
it; its probes call /healthz and /readyz themselves.

Examples:
  rideshare probe                                   # http://127.0.0.1:8080/readyz
  rideshare probe http://127.0.0.1:8080/healthz`

// runProbe is `rideshare probe [URL]`.
func runProbe(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "probe", "probe [URL] [--timeout 2s]", probeSummary)
	timeout := fs.Duration("timeout", 2*time.Second, "a process slower than this to answer counts as unhealthy")
	pos, err := parseInterspersed(fs, env, args)
	if err != nil {
		return err
	}
	url := "http://127.0.0.1:8080/readyz"
	switch len(pos) {
	case 0:
	case 1:
		url = pos[0]
	default:
		fmt.Fprintln(env.Stderr, "Usage: rideshare probe [URL] [--timeout 2s]")
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(env.Stderr, "rideshare probe:", err)
		return errUsage
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	// The body says why a process is not ready: `docker inspect` shows it.
	body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", url, res.Status, body)
	}
	return nil
}
