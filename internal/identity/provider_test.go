package identity

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
)

// tokenJSON is the OAuth token response, and OAuth's error body.
type tokenJSON struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	IDToken      string `json:"id_token"`

	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// accessClaims are the claims the gateway reads.
type accessClaims struct {
	jwt.RegisteredClaims
	Role     string `json:"role"`
	ClientID string `json:"client_id"`
}

// token posts form to the token endpoint, with basic auth when user is set.
func (ti *testIdentity) token(t *testing.T, form url.Values, user, pass string) (int, tokenJSON) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ti.issuer+tokenPath, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	res, err := ti.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("token response Cache-Control = %q, want no-store", cc)
	}
	var out tokenJSON
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("token response (%d) is not JSON: %v", res.StatusCode, err)
	}
	return res.StatusCode, out
}

func (ti *testIdentity) signUp(t *testing.T, email, password string) string {
	t.Helper()
	c := identityv1connect.NewIdentityServiceClient(ti.http, ti.issuer)
	res, err := c.CreateAccount(context.Background(), connect.NewRequest(&identityv1.CreateAccountRequest{
		Caller: &authv1.Caller{UserId: "gateway", Role: authv1.Role_ROLE_SERVICE},
		Email:  email, Password: password, Role: authv1.Role_ROLE_RIDER, Name: "Ann",
	}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetAccount().GetId()
}

func passwordForm(username, password string) url.Values {
	return url.Values{"grant_type": {"password"}, "client_id": {CLIClientID}, "username": {username}, "password": {password}}
}

// verifier checks tokens the way the gateway does: signature against the
// published JWKS, ES256 only, issuer, audience and expiry.
func (ti *testIdentity) verifier(t *testing.T) func(string) (*accessClaims, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	keys, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{ti.issuer + jwksPath}, keyfunc.Override{Client: ti.http})
	if err != nil {
		t.Fatal(err)
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(ti.issuer),
		jwt.WithAudience(APIAudience), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	return func(token string) (*accessClaims, error) {
		var c accessClaims
		tok, err := parser.ParseWithClaims(token, &c, keys.Keyfunc)
		if err != nil {
			return nil, err
		}
		if tok.Header["kid"] == "" {
			t.Errorf("token has no kid")
		}
		return &c, nil
	}
}

func TestPasswordGrantAndRefresh(t *testing.T) {
	ti := startIdentity(t, true)
	verify := ti.verifier(t)
	accountID := ti.signUp(t, "ann@example.com", "password1")

	// Sign in. The email is matched case-insensitively, as it was stored.
	status, tok := ti.token(t, passwordForm("Ann@Example.com", "password1"), "", "")
	if status != http.StatusOK {
		t.Fatalf("password grant: %d %+v", status, tok)
	}
	if tok.TokenType != "Bearer" || tok.AccessToken == "" || tok.RefreshToken == "" || tok.IDToken == "" ||
		tok.Scope != "openid offline_access" || tok.ExpiresIn < 890 || tok.ExpiresIn > 900 {
		t.Fatalf("token response = %+v", tok)
	}
	claims, err := verify(tok.AccessToken)
	if err != nil {
		t.Fatalf("access token does not verify: %v", err)
	}
	if claims.Subject != accountID || claims.Role != "rider" || claims.ClientID != CLIClientID ||
		!slices.Contains(claims.Audience, CLIClientID) || claims.ID == "" {
		t.Errorf("claims = %+v", claims)
	}
	if exp := time.Until(claims.ExpiresAt.Time); exp < 14*time.Minute || exp > 15*time.Minute {
		t.Errorf("access token lives %v, want 15m", exp)
	}

	// Refresh: new tokens, and the used refresh token is dead.
	refresh := url.Values{"grant_type": {"refresh_token"}, "client_id": {CLIClientID}, "refresh_token": {tok.RefreshToken}}
	status, next := ti.token(t, refresh, "", "")
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %+v", status, next)
	}
	if next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken || next.AccessToken == tok.AccessToken {
		t.Fatalf("refresh did not rotate: %+v", next)
	}
	nextClaims, err := verify(next.AccessToken)
	if err != nil {
		t.Fatalf("refreshed access token does not verify: %v", err)
	}
	if nextClaims.Subject != accountID || nextClaims.Role != "rider" || nextClaims.ID == claims.ID {
		t.Errorf("refreshed claims = %+v", nextClaims)
	}
	status, replay := ti.token(t, refresh, "", "")
	if status != http.StatusBadRequest || replay.Error != "invalid_grant" {
		t.Fatalf("replayed refresh token: %d %+v, want 400 invalid_grant", status, replay)
	}
	// The replay revoked the family, so the token it was rotated into is
	// refused too: whoever stole one of them holds nothing now.
	refresh.Set("refresh_token", next.RefreshToken)
	if status, res := ti.token(t, refresh, "", ""); status != http.StatusBadRequest || res.Error != "invalid_grant" {
		t.Fatalf("refresh after replay: %d %+v, want 400 invalid_grant", status, res)
	}
}

func TestPasswordGrantRefusals(t *testing.T) {
	ti := startIdentity(t, true)
	ti.signUp(t, "ann@example.com", "password1")
	wrong := tokenJSON{Error: "invalid_grant", ErrorDescription: "invalid username or password"}
	for _, tc := range []struct {
		name   string
		form   url.Values
		status int
		want   tokenJSON
	}{
		{"wrong password", passwordForm("ann@example.com", "password2"), http.StatusBadRequest, wrong},
		// Same answer as a wrong password, so it says nothing about who has an account.
		{"unknown email", passwordForm("bob@example.com", "password1"), http.StatusBadRequest, wrong},
		{"unknown client", func() url.Values {
			f := passwordForm("ann@example.com", "password1")
			f.Set("client_id", "nobody")
			return f
		}(), http.StatusUnauthorized, tokenJSON{Error: "invalid_client"}},
		{"operator client", func() url.Values {
			f := passwordForm("ann@example.com", "password1")
			f.Set("client_id", OperatorClientID)
			f.Set("client_secret", testOperatorSecret)
			return f
		}(), http.StatusBadRequest, tokenJSON{Error: "unauthorized_client"}},
		{"unknown scope", func() url.Values {
			f := passwordForm("ann@example.com", "password1")
			f.Set("scope", "openid admin")
			return f
		}(), http.StatusBadRequest, tokenJSON{Error: "invalid_scope"}},
		{"no password", passwordForm("ann@example.com", ""), http.StatusBadRequest, tokenJSON{Error: "invalid_request"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, res := ti.token(t, tc.form, "", "")
			if status != tc.status || res.Error != tc.want.Error || res.AccessToken != "" {
				t.Fatalf("%d %+v, want %d %s", status, res, tc.status, tc.want.Error)
			}
			if tc.want.ErrorDescription != "" && res.ErrorDescription != tc.want.ErrorDescription {
				t.Errorf("description = %q, want %q", res.ErrorDescription, tc.want.ErrorDescription)
			}
		})
	}

	// Without offline_access there is no refresh token; without openid no
	// ID token.
	f := passwordForm("ann@example.com", "password1")
	f.Set("scope", "email")
	status, tok := ti.token(t, f, "", "")
	if status != http.StatusOK || tok.RefreshToken != "" || tok.IDToken != "" || tok.Scope != "email" {
		t.Fatalf("scope=email: %d %+v", status, tok)
	}
}

func TestPasswordGrantOnlyInDevMode(t *testing.T) {
	ti := startIdentity(t, false)
	ti.signUp(t, "ann@example.com", "password1")
	status, res := ti.token(t, passwordForm("ann@example.com", "password1"), "", "")
	if status != http.StatusBadRequest || res.Error != "unsupported_grant_type" || res.AccessToken != "" {
		t.Fatalf("password grant outside dev mode: %d %+v", status, res)
	}
}

func TestClientCredentials(t *testing.T) {
	ti := startIdentity(t, false)
	verify := ti.verifier(t)
	form := url.Values{"grant_type": {"client_credentials"}}

	status, tok := ti.token(t, form, OperatorClientID, testOperatorSecret)
	if status != http.StatusOK || tok.AccessToken == "" || tok.RefreshToken != "" || tok.TokenType != "Bearer" {
		t.Fatalf("client_credentials: %d %+v", status, tok)
	}
	claims, err := verify(tok.AccessToken)
	if err != nil {
		t.Fatalf("operator token does not verify: %v", err)
	}
	if claims.Subject != "client:"+OperatorClientID || claims.Role != "admin" || !slices.Contains(claims.Audience, OperatorClientID) {
		t.Errorf("claims = %+v", claims)
	}

	for _, tc := range []struct {
		name, user, pass string
	}{
		{"wrong secret", OperatorClientID, "not-the-secret"},
		{"public client", CLIClientID, ""},
		{"unknown client", "nobody", "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, res := ti.token(t, form, tc.user, tc.pass)
			if status != http.StatusUnauthorized || res.Error != "invalid_client" || res.AccessToken != "" {
				t.Fatalf("%d %+v, want 401 invalid_client", status, res)
			}
		})
	}
}

func TestDiscoveryListsEndpointsUnderIssuer(t *testing.T) {
	ti := startIdentity(t, true)
	res, err := ti.http.Get(ti.issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"issuer":                 ti.issuer,
		"authorization_endpoint": ti.issuer + "/oauth2/authorize",
		"token_endpoint":         ti.issuer + "/oauth2/token",
		"jwks_uri":               ti.issuer + "/oauth2/jwks",
		"userinfo_endpoint":      ti.issuer + "/oauth2/userinfo",
		"revocation_endpoint":    ti.issuer + "/oauth2/revoke",
		"introspection_endpoint": ti.issuer + "/oauth2/introspect",
		"end_session_endpoint":   ti.issuer + "/oauth2/logout",
	}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %s", k, doc[k], v)
		}
	}
	if algs, _ := doc["id_token_signing_alg_values_supported"].([]any); !slices.Equal(algs, []any{"ES256"}) {
		t.Errorf("signing algorithms = %v, want [ES256]", doc["id_token_signing_alg_values_supported"])
	}

	// The JWKS publishes the signing key, public part only.
	res, err = ti.http.Get(ti.issuer + "/oauth2/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.NewDecoder(res.Body).Decode(&jwks); err != nil {
		t.Fatal(err)
	}
	if len(jwks.Keys) != 1 || jwks.Keys[0]["alg"] != "ES256" || jwks.Keys[0]["kty"] != "EC" ||
		jwks.Keys[0]["kid"] == "" || jwks.Keys[0]["d"] != nil {
		t.Errorf("jwks = %v", jwks.Keys)
	}
}

func TestUserinfoAndRevocation(t *testing.T) {
	ti := startIdentity(t, true)
	accountID := ti.signUp(t, "ann@example.com", "password1")
	_, tok := ti.token(t, passwordForm("ann@example.com", "password1"), "", "")

	userinfo := func() (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, ti.issuer+userinfoPath, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		res, err := ti.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(res.Body).Decode(&body)
		return res.StatusCode, body
	}
	status, info := userinfo()
	if status != http.StatusOK || info["sub"] != accountID || info["email"] != "ann@example.com" || info["name"] != "Ann" {
		t.Fatalf("userinfo: %d %v", status, info)
	}

	// The operator introspects it: active, and whose it is.
	introspect := func() map[string]any {
		req, _ := http.NewRequest(http.MethodPost, ti.issuer+introspectPath, strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(OperatorClientID, testOperatorSecret)
		res, err := ti.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
			t.Fatalf("introspection (%d): %v", res.StatusCode, err)
		}
		return body
	}
	if got := introspect(); got["active"] != true || got["sub"] != accountID {
		t.Errorf("introspection = %v", got)
	}

	revoke := func(token, hint string) {
		form := url.Values{"token": {token}, "client_id": {CLIClientID}}
		if hint != "" {
			form.Set("token_type_hint", hint)
		}
		res, err := ti.http.PostForm(ti.issuer+revokePath, form)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("revoke: %d", res.StatusCode)
		}
	}
	revoke(tok.AccessToken, "access_token")
	if status, _ := userinfo(); status == http.StatusOK {
		t.Error("userinfo still answers for a revoked access token")
	}
	if got := introspect(); got["active"] == true {
		t.Errorf("revoked token introspects as %v", got)
	}
	revoke(tok.RefreshToken, "")
	refresh := url.Values{"grant_type": {"refresh_token"}, "client_id": {CLIClientID}, "refresh_token": {tok.RefreshToken}}
	if status, res := ti.token(t, refresh, "", ""); status != http.StatusBadRequest || res.Error != "invalid_grant" {
		t.Fatalf("refresh with a revoked token: %d %+v", status, res)
	}
	if n := count(t, ti.db, "refresh_tokens"); n != 0 {
		t.Errorf("%d refresh tokens left after revocation", n)
	}
}

// redirect GETs u and returns where it redirects to.
func (ti *testIdentity) redirect(t *testing.T, u string) *url.URL {
	t.Helper()
	res, err := ti.http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusFound {
		t.Fatalf("GET %s: %d %s, want a redirect", u, res.StatusCode, body)
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
