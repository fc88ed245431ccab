package identity

import (
	"context"
	"errors"
	"testing"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// TestRedeemIsConditional forces the interleaving of a code-exchange race:
// two exchanges that both read the request as unredeemed, then both try to
// issue tokens. The conditional update lets exactly one through, and the
// other revokes what the first issued.
func TestRedeemIsConditional(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	h, err := newHasher(1)
	if err != nil {
		t.Fatal(err)
	}
	cls := &clients{db: db, hasher: h}
	if err := cls.seed(ctx, ""); err != nil {
		t.Fatal(err)
	}
	cli, err := cls.get(ctx, CLIClientID)
	if err != nil {
		t.Fatal(err)
	}
	ars := &authRequests{db: db}
	toks := &tokens{db: db}
	st := &storage{db: db, clients: cls, authRequests: ars, tokens: toks}

	// signedIn walks a request through the login page's steps and returns
	// it as the token endpoint reads it by its code.
	signedIn := func(scopes ...string) *authRequest {
		t.Helper()
		a, err := ars.create(ctx, cli, &oidc.AuthRequest{
			ClientID: CLIClientID, RedirectURI: testRedirect, Scopes: scopes, ResponseType: oidc.ResponseTypeCode,
			CodeChallenge: testChallenge, CodeChallengeMethod: oidc.CodeChallengeMethodS256,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, csrf, err := ars.beginLogin(ctx, a.id)
		if err != nil {
			t.Fatal(err)
		}
		if err := ars.signIn(ctx, a.id, csrf, "account-1"); err != nil {
			t.Fatal(err)
		}
		code, err := randomToken()
		if err != nil {
			t.Fatal(err)
		}
		if err := ars.saveCode(ctx, a.id, code); err != nil {
			t.Fatal(err)
		}
		got, err := ars.byCode(ctx, code)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	invalidGrant := func(err error) bool {
		var oe *oidc.Error
		return errors.As(err, &oe) && oe.ErrorType == oidc.InvalidGrant
	}

	t.Run("with a refresh token", func(t *testing.T) {
		a := signedIn(oidc.ScopeOpenID, oidc.ScopeOfflineAccess)
		access, refresh, _, err := st.CreateAccessAndRefreshTokens(ctx, a, "")
		if err != nil || refresh == "" {
			t.Fatalf("first exchange: %q, %v", refresh, err)
		}
		if _, again, _, err := st.CreateAccessAndRefreshTokens(ctx, a, ""); !invalidGrant(err) || again != "" {
			t.Fatalf("second exchange: %q, %v; want invalid_grant", again, err)
		}
		if _, err := toks.byRefreshToken(ctx, refresh); err == nil {
			t.Error("the first exchange's refresh token survived the second exchange")
		}
		if revoked, err := toks.revoked(ctx, access); err != nil || !revoked {
			t.Errorf("the first exchange's access token is not revoked (%v)", err)
		}
	})
	t.Run("access token only", func(t *testing.T) {
		a := signedIn(oidc.ScopeOpenID)
		access, _, err := st.CreateAccessToken(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.CreateAccessToken(ctx, a); !invalidGrant(err) {
			t.Fatalf("second exchange: %v; want invalid_grant", err)
		}
		if revoked, err := toks.revoked(ctx, access); err != nil || !revoked {
			t.Errorf("the first exchange's access token is not revoked (%v)", err)
		}
	})
}

func TestRedirectAllowed(t *testing.T) {
	native := &client{id: "native", redirectURIs: []string{"http://127.0.0.1/callback", "com.example.app:/oauth"}}
	web := &client{id: "web", secretHash: "x", redirectURIs: []string{"https://app.example.com/cb", "http://127.0.0.1/cb"}}
	for _, tc := range []struct {
		c   *client
		uri string
		ok  bool
	}{
		{native, "http://127.0.0.1/callback", true},
		{native, "http://127.0.0.1:1/callback", true},
		{native, "http://127.0.0.1:65535/callback", true},
		{native, "http://127.0.0.1:65536/callback", false},
		{native, "http://127.0.0.1:/callback", false},
		{native, "http://127.0.0.1:80/callback/", false},
		{native, "http://127.0.0.1:80/callback?", false},
		{native, "http://127.0.0.1:80/%63allback", false},
		{native, "com.example.app:/oauth", true},
		{native, "com.example.app:/oauth/", false},
		{native, "com.example.app://oauth", false},
		// A confidential client: exact strings only, no port freedom even
		// on loopback.
		{web, "https://app.example.com/cb", true},
		{web, "https://app.example.com/cb/", false},
		{web, "https://app.example.com:443/cb", false},
		{web, "https://APP.example.com/cb", false},
		{web, "https://app.example.com/cb?x=1", false},
		{web, "http://127.0.0.1/cb", true},
		{web, "http://127.0.0.1:8080/cb", false},
	} {
		if got := tc.c.redirectAllowed(tc.uri); got != tc.ok {
			t.Errorf("%s: redirectAllowed(%q) = %v, want %v", tc.c.id, tc.uri, got, tc.ok)
		}
	}
}
