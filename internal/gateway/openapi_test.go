package gateway

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/auth"
)

// TestOpenAPIMatchesRoutes holds the published document and the route table
// together: the same /v1 routes, methods and status codes, and the same
// roles, so neither can change without the other.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Roles     []string                   `json:"x-roles"`
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/v1/") {
			continue // forwarded to identity, not in the route table
		}
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	g := &Gateway{}
	for _, rt := range g.routes() {
		key := rt.method + " " + rt.path
		op, ok := doc.Paths[rt.path][strings.ToLower(rt.method)]
		if !ok {
			t.Errorf("%s is served but not documented", key)
			continue
		}
		delete(documented, key)
		var codes []int
		for c := range op.Responses {
			if n, err := strconv.Atoi(c); err == nil {
				codes = append(codes, n)
			}
		}
		want := slices.Clone(rt.statuses)
		slices.Sort(codes)
		slices.Sort(want)
		if !slices.Equal(codes, want) {
			t.Errorf("%s: documented statuses %v, route answers %v", key, codes, want)
		}
		var roles []string
		for _, r := range rt.roles {
			roles = append(roles, auth.RoleName(r))
		}
		if !slices.Equal(op.Roles, roles) {
			t.Errorf("%s: documented roles %v, route allows %v", key, op.Roles, roles)
		}
	}
	for key := range documented {
		t.Errorf("%s is documented but not served", key)
	}
}
