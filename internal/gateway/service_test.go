package gateway

import (
	"io"
	"log/slog"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/platform"
)

func TestIssuerConfig(t *testing.T) {
	deps := func(settings map[string]string) platform.Deps {
		return platform.Deps{Config: platform.Config{PublicURL: "http://127.0.0.1:8080", Settings: settings}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	builtIn := issuerConfig(deps(nil), "http://127.0.0.1:9001")
	if builtIn.Issuer != "http://127.0.0.1:8080" || builtIn.JWKSURL != "http://127.0.0.1:9001/oauth2/jwks" || builtIn.Audience != "rideshare" ||
		builtIn.RoleClaim != "role" || builtIn.AllowMissingJTI {
		t.Errorf("built-in issuer: %+v", builtIn)
	}
	kc := issuerConfig(deps(map[string]string{"gateway.oidc_issuer": "https://sso.example.com/realms/rideshare",
		"gateway.oidc_audience": "rideshare-api", "gateway.role_claim": "realm_access.roles"}), "http://127.0.0.1:9001")
	if kc.Issuer != "https://sso.example.com/realms/rideshare" || kc.JWKSURL != "" || kc.Audience != "rideshare-api" ||
		kc.RoleClaim != "realm_access.roles" || kc.AllowMissingJTI {
		t.Errorf("Keycloak: %+v (the keys must be discovered, not taken from identity)", kc)
	}
	auth0 := issuerConfig(deps(map[string]string{"gateway.oidc_issuer": "https://tenant.auth0.com/", "gateway.oidc_require_jti": "false"}), "http://x")
	if auth0.Audience != "rideshare" || !auth0.AllowMissingJTI {
		t.Errorf("Auth0: %+v", auth0)
	}
}
