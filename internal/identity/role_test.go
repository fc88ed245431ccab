package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/url"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
)

// operatorToken is an access token of the operator client (role admin).
func (ti *testIdentity) operatorToken(t *testing.T) string {
	t.Helper()
	status, tok := ti.token(t, url.Values{"grant_type": {"client_credentials"}}, OperatorClientID, testOperatorSecret)
	if status != http.StatusOK {
		t.Fatalf("client_credentials: %d %+v", status, tok)
	}
	return tok.AccessToken
}

// setRole calls SetRole on identity with token as the bearer.
func (ti *testIdentity) setRole(token string, caller *authv1.Caller, email string, role authv1.Role, granted bool) (*identityv1.SetRoleResponse, error) {
	req := connect.NewRequest(&identityv1.SetRoleRequest{Caller: caller, Email: email, Role: role, Granted: granted})
	if token != "" {
		req.Header().Set("Authorization", "Bearer "+token)
	}
	res, err := identityv1connect.NewIdentityServiceClient(ti.http, ti.direct).SetRole(context.Background(), req)
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

var operatorCaller = &authv1.Caller{UserId: clientSubject(OperatorClientID), Role: authv1.Role_ROLE_ADMIN}

func TestSetRoleGrantsAndRevokesAdmin(t *testing.T) {
	ti := startIdentity(t, true)
	verify := ti.verifier(t)
	annID := ti.signUp(t, "ann@example.com", "password1")
	ti.signUp(t, "bob@example.com", "password1")
	roleOf := func(token string) string {
		t.Helper()
		c, err := verify(token)
		if err != nil {
			t.Fatal(err)
		}
		return c.Role
	}
	_, before := ti.token(t, passwordForm("ann@example.com", "password1"), "", "")

	res, err := ti.setRole(ti.operatorToken(t), operatorCaller, "Ann@Example.com", authv1.Role_ROLE_ADMIN, true)
	if err != nil {
		t.Fatal(err)
	}
	if !res.GetChanged() || res.GetPreviousRole() != authv1.Role_ROLE_RIDER ||
		res.GetAccount().GetId() != annID || res.GetAccount().GetRole() != authv1.Role_ROLE_ADMIN {
		t.Fatalf("grant = %v", res)
	}
	// Tokens issued before keep their role until they expire; every token
	// issued after, by sign-in or refresh, carries the new one.
	if got := roleOf(before.AccessToken); got != "rider" {
		t.Errorf("a token issued before the grant says %q", got)
	}
	_, after := ti.token(t, passwordForm("ann@example.com", "password1"), "", "")
	if got := roleOf(after.AccessToken); got != "admin" {
		t.Errorf("a token issued after the grant says %q", got)
	}
	_, refreshed := ti.token(t, url.Values{"grant_type": {"refresh_token"}, "client_id": {CLIClientID}, "refresh_token": {before.RefreshToken}}, "", "")
	if got := roleOf(refreshed.AccessToken); got != "admin" {
		t.Errorf("a refresh after the grant says %q", got)
	}
	// Granting again changes nothing.
	if res, err := ti.setRole(ti.operatorToken(t), nil, "ann@example.com", authv1.Role_ROLE_ADMIN, true); err != nil || res.GetChanged() {
		t.Fatalf("second grant = %v, %v", res, err)
	}
	// An admin account may grant too, with its own token.
	if res, err := ti.setRole(after.AccessToken, nil, "bob@example.com", authv1.Role_ROLE_ADMIN, true); err != nil || !res.GetChanged() {
		t.Fatalf("grant by an admin account = %v, %v", res, err)
	}
	// Revoking returns the account to the role it signed up with.
	res, err = ti.setRole(ti.operatorToken(t), operatorCaller, "ann@example.com", authv1.Role_ROLE_ADMIN, false)
	if err != nil || !res.GetChanged() || res.GetAccount().GetRole() != authv1.Role_ROLE_RIDER || res.GetPreviousRole() != authv1.Role_ROLE_ADMIN {
		t.Fatalf("revoke = %v, %v", res, err)
	}
	_, demoted := ti.token(t, passwordForm("ann@example.com", "password1"), "", "")
	if got := roleOf(demoted.AccessToken); got != "rider" {
		t.Errorf("a token issued after the revoke says %q", got)
	}

	lines := ti.logs.audits(t, auditRoleChanged)
	if len(lines) != 3 {
		t.Fatalf("role_changed audit lines = %v, want one per change", lines)
	}
	if l := lines[0]; l["actor"] != clientSubject(OperatorClientID) || l["account_id"] != annID || l["from"] != "rider" || l["to"] != "admin" {
		t.Errorf("first role_changed line = %v", l)
	}
	if l := lines[1]; l["actor"] != annID {
		t.Errorf("second role_changed line = %v, want ann as the actor", l)
	}
}

func TestSetRoleRefusals(t *testing.T) {
	ti := startIdentity(t, true)
	riderID := ti.signUp(t, "ann@example.com", "password1")
	_, rider := ti.token(t, passwordForm("ann@example.com", "password1"), "", "")
	operator := ti.operatorToken(t)

	// A token of the right shape signed by someone else's key, under
	// identity's own kid.
	forged := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": ti.issuer, "aud": []string{APIAudience}, "sub": "intruder", "role": "admin",
		"exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix(),
	})
	k, _ := ti.svc.keys.current()
	forged.Header["kid"] = k.ID()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forgedToken, err := forged.SignedString(other)
	if err != nil {
		t.Fatal(err)
	}

	revoked := ti.operatorToken(t)
	res, err := ti.http.PostForm(ti.issuer+revokePath, url.Values{"token": {revoked}, "client_id": {OperatorClientID}, "client_secret": {testOperatorSecret}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()

	for _, tc := range []struct {
		name   string
		token  string
		caller *authv1.Caller
		email  string
		role   authv1.Role
		code   connect.Code
	}{
		{"no token", "", operatorCaller, "ann@example.com", authv1.Role_ROLE_ADMIN, connect.CodeUnauthenticated},
		{"a rider", rider.AccessToken, nil, "ann@example.com", authv1.Role_ROLE_ADMIN, connect.CodePermissionDenied},
		{"a rider claiming to be admin", rider.AccessToken, &authv1.Caller{UserId: riderID, Role: authv1.Role_ROLE_ADMIN},
			"ann@example.com", authv1.Role_ROLE_ADMIN, connect.CodePermissionDenied},
		{"a rider claiming to be the operator", rider.AccessToken, operatorCaller, "ann@example.com", authv1.Role_ROLE_ADMIN, connect.CodePermissionDenied},
		{"the operator claiming to be someone else", operator, &authv1.Caller{UserId: "someone", Role: authv1.Role_ROLE_ADMIN},
			"ann@example.com", authv1.Role_ROLE_ADMIN, connect.CodePermissionDenied},
		{"a forged token", forgedToken, nil, "ann@example.com", authv1.Role_ROLE_ADMIN, connect.CodeUnauthenticated},
		{"a revoked token", revoked, nil, "ann@example.com", authv1.Role_ROLE_ADMIN, connect.CodeUnauthenticated},
		{"not a JWT", "garbage", nil, "ann@example.com", authv1.Role_ROLE_ADMIN, connect.CodeUnauthenticated},
		{"a rider role", operator, nil, "ann@example.com", authv1.Role_ROLE_RIDER, connect.CodeInvalidArgument},
		{"no email", operator, nil, "", authv1.Role_ROLE_ADMIN, connect.CodeInvalidArgument},
		{"unknown email", operator, nil, "nobody@example.com", authv1.Role_ROLE_ADMIN, connect.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ti.setRole(tc.token, tc.caller, tc.email, tc.role, true)
			if connect.CodeOf(err) != tc.code {
				t.Fatalf("SetRole = %v, %v; want %v", res, err, tc.code)
			}
		})
	}
	var role string
	if err := ti.db.Reader().QueryRow(`SELECT role FROM accounts WHERE id = $1`, riderID).Scan(&role); err != nil || role != "rider" {
		t.Fatalf("role after refused changes = %q, %v", role, err)
	}
	if got := ti.logs.audits(t, auditRoleChangeRefused); len(got) != 8 {
		t.Errorf("%d role_change_refused audit lines, want one per refused caller (8)", len(got))
	}
	if got := ti.logs.audits(t, auditRoleChanged); len(got) != 0 {
		t.Errorf("role_changed logged for refused changes: %v", got)
	}
}
