package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
	"github.com/rideshare-platform/rideshare/internal/identity"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

const testSecret = "operator-secret-for-cli-tests-0123456789"

// startIdentity runs the identity component behind httptest, in
// development mode so the test can sign in with a password and look at
// the role in the token. It serves its OAuth endpoints itself, as if the
// gateway in front of it were transparent.
func startIdentity(t *testing.T) string {
	t.Helper()
	db := testenv.DB(t, identity.Service.Migrations)
	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	log := slog.New(slog.DiscardHandler)
	comp, err := identity.Service.New(context.Background(), platform.Deps{
		Config: platform.Config{PublicURL: base, Dev: true, Secrets: map[string]string{identity.OperatorSecretName: testSecret}},
		DB:     db, Outbox: outbox.New(db, "identity", outbox.Options{Logger: log}), Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = comp.Handler
	srv.Start()
	t.Cleanup(srv.Close)
	_, err = identityv1connect.NewIdentityServiceClient(http.DefaultClient, base).CreateAccount(context.Background(),
		connect.NewRequest(&identityv1.CreateAccountRequest{
			Email: "ada@example.com", Password: "password1", Role: authv1.Role_ROLE_RIDER, Name: "Ada",
		}))
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// roleInNewToken signs ada in and returns the role her new token carries.
func roleInNewToken(t *testing.T, base string) string {
	t.Helper()
	res, err := http.PostForm(base+"/oauth2/token", url.Values{"grant_type": {"password"}, "client_id": {identity.CLIClientID},
		"username": {"ada@example.com"}, "password": {"password1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	var claims struct {
		jwt.RegisteredClaims
		Role string `json:"role"`
	}
	if _, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, &claims); err != nil {
		t.Fatal(err)
	}
	return claims.Role
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errs bytes.Buffer
	code = Run(context.Background(), Env{Args: args, Stdout: &out, Stderr: &errs})
	return code, out.String(), errs.String()
}

func TestAdminGrantAndRevoke(t *testing.T) {
	base := startIdentity(t)
	dir := t.TempDir()
	// What `up` writes; the gateway is identity itself here.
	if err := writeState(dir, State{GatewayURL: base, Services: map[string]string{"identity": base},
		ClientID: identity.OperatorClientID, ClientSecret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if got := roleInNewToken(t, base); got != "rider" {
		t.Fatalf("role before = %q", got)
	}

	// Local platform: everything from platform.json; flags after the email.
	code, out, errs := runCLI("admin", "grant", "Ada@Example.com", "--data", dir)
	if code != 0 {
		t.Fatalf("admin grant: exit %d: %s%s", code, out, errs)
	}
	for _, want := range []string{"Granted admin to ada@example.com", "was rider", "tokens issued from now on", "15 minutes"} {
		if !strings.Contains(out, want) {
			t.Errorf("grant output lacks %q:\n%s", want, out)
		}
	}
	if got := roleInNewToken(t, base); got != "admin" {
		t.Fatalf("role after grant = %q", got)
	}
	if code, out, _ := runCLI("admin", "--data", dir, "grant", "ada@example.com"); code != 0 || !strings.Contains(out, "already an admin") {
		t.Fatalf("second grant: exit %d: %s", code, out)
	}

	// Remote platform: flags only, no state file.
	code, out, errs = runCLI("admin", "revoke", "ada@example.com", "--data", t.TempDir(), "--gateway", base+"/",
		"--identity", base, "--client-id", identity.OperatorClientID, "--client-secret", testSecret)
	if code != 0 || !strings.Contains(out, "Revoked admin from ada@example.com") || !strings.Contains(out, "now rider") {
		t.Fatalf("admin revoke: exit %d: %s%s", code, out, errs)
	}
	if got := roleInNewToken(t, base); got != "rider" {
		t.Fatalf("role after revoke = %q", got)
	}
}

func TestAdminFailures(t *testing.T) {
	base := startIdentity(t)
	remote := func(secret string) []string {
		return []string{"--data", t.TempDir(), "--gateway", base, "--identity", base, "--client-id", identity.OperatorClientID, "--client-secret", secret}
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"wrong secret", append([]string{"admin", "grant", "ada@example.com"}, remote("not-the-secret")...), 1, "invalid_client"},
		{"unknown account", append([]string{"admin", "grant", "nobody@example.com"}, remote(testSecret)...), 1, "not_found"},
		{"no platform", []string{"admin", "grant", "ada@example.com", "--data", t.TempDir()}, 1, "is `rideshare up` running"},
		{"no email", []string{"admin", "grant"}, 2, "Usage"},
		{"unknown verb", []string{"admin", "promote", "ada@example.com"}, 2, "Usage"},
		{"unknown flag", []string{"admin", "grant", "ada@example.com", "--nope"}, 2, "not defined: -nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(tc.args...)
			if code != tc.code || !strings.Contains(out+errs, tc.want) {
				t.Fatalf("exit %d, want %d with %q: %s%s", code, tc.code, tc.want, out, errs)
			}
		})
	}
	if got := roleInNewToken(t, base); got != "rider" {
		t.Fatalf("role after failed commands = %q", got)
	}
}

func TestAdminHelp(t *testing.T) {
	code, out, _ := runCLI("admin", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"grant|revoke EMAIL", "client_credentials", "SetRole", "platform.json", "--gateway", "--client-secret",
		"tokens issued after it"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}
