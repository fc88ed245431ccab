package faults

import (
	"mime"
	"net/http"
	"strings"
)

// isRPC reports whether a request speaks Connect, gRPC or gRPC-Web, so an
// injected error reaches its client as an RPC error rather than a body it
// cannot parse. connect's own ErrorWriter counts any POST of application/*
// as Connect, which would turn an OAuth form post into an RPC; this is
// narrower: JSON counts only on an RPC-shaped path.
func isRPC(r *http.Request) bool {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case strings.HasPrefix(ct, "application/grpc"), // gRPC and gRPC-Web, any codec
		strings.HasPrefix(ct, "application/connect+"), // Connect streaming
		ct == "application/proto":
		return true
	case ct == "application/json":
		return procedurePath(r.URL.Path)
	case r.Method == http.MethodGet && ct == "":
		// Connect's GET for side-effect-free methods carries the message in
		// the query.
		return procedurePath(r.URL.Path) && r.URL.Query().Has("encoding")
	}
	return false
}

// procedurePath reports whether path looks like /pkg.Service/Method.
func procedurePath(path string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return ok && strings.Contains(svc, ".") && method != "" && !strings.Contains(method, "/")
}
