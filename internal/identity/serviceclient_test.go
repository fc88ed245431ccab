package identity

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/auth"
)

// TestServiceClients: each platform service gets a token for itself with
// its derived secret, and only with it; the token is a service token to the
// services' check and nothing to a check of users' tokens.
func TestServiceClients(t *testing.T) {
	ti := startIdentity(t, false)
	ctx := context.Background()
	v, err := auth.NewVerifier(ctx, ti.http, ti.direct+jwksPath, ti.issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"client_credentials"}}

	status, tok := ti.token(t, form, auth.ServiceClientID("rides"), auth.ServiceSecret(testServiceMaster, "rides"))
	if status != http.StatusOK || tok.AccessToken == "" || tok.RefreshToken != "" {
		t.Fatalf("rides's client_credentials: %d %+v", status, tok)
	}
	if life := time.Duration(tok.ExpiresIn) * time.Second; life <= 0 || life > serviceTokenLifetime {
		t.Errorf("service token lives %s, want at most %s", life, serviceTokenLifetime)
	}
	name, _, err := v.VerifyService(ctx, tok.AccessToken)
	if err != nil || name != "rides" {
		t.Fatalf("the services' check: %q, %v; want rides", name, err)
	}
	if c, err := v.Verify(ctx, tok.AccessToken); err == nil {
		t.Errorf("a service token passed the check of users' tokens as %v", c)
	}
	// Nor is the operator's token (admin) a service token.
	_, op := ti.token(t, form, OperatorClientID, testOperatorSecret)
	if _, _, err := v.VerifyService(ctx, op.AccessToken); err == nil {
		t.Error("the operator's token passed as a service token")
	}

	for _, tc := range []struct {
		name, user, pass string
	}{
		{"wrong secret", auth.ServiceClientID("rides"), "not-the-secret"},
		{"another service's secret", auth.ServiceClientID("rides"), auth.ServiceSecret(testServiceMaster, "payments")},
		{"the master secret itself", auth.ServiceClientID("rides"), testServiceMaster},
		{"secret from another master", auth.ServiceClientID("rides"), auth.ServiceSecret("another master", "rides")},
		{"a service the platform does not have", auth.ServiceClientID("evil"), auth.ServiceSecret(testServiceMaster, "evil")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, res := ti.token(t, form, tc.user, tc.pass)
			if status != http.StatusUnauthorized || res.Error != "invalid_client" || res.AccessToken != "" {
				t.Fatalf("%d %+v, want 401 invalid_client", status, res)
			}
		})
	}
}

// TestServiceClientsNeedTheMaster: without a master secret there are no
// service clients, whatever secret is presented.
func TestServiceClientsNeedTheMaster(t *testing.T) {
	sc := newServiceClients("", map[string][]string{"rides": nil})
	if _, err := sc.get("rides"); err == nil {
		t.Error("a service client without a master secret")
	}
	if sc.authenticate(auth.ServiceClientID("rides"), auth.ServiceSecret("", "rides")) {
		t.Error("the secret derived from an empty master authenticated")
	}
}
