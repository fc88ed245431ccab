package identity

import (
	"net/url"
	"strings"
	"testing"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
)

// TestAuditLog drives each kind of security event over HTTP and reads the
// log lines back: one structured line per event, with "audit": true and
// the event's name, saying who and what without a password, secret, token
// or the email of a failed login.
func TestAuditLog(t *testing.T) {
	ti := startIdentity(t, true)
	const secretPassword = "s3cret-Passw0rd"
	ti.signUp(t, "ann@example.com", secretPassword)

	// A failed and a successful login on the page, a failed password grant.
	b := ti.browser(t)
	login := b.authorize(authorizeParams())
	b.post(ti.issuer+loginPath, loginForm(t, login, "ann@example.com", "wrong-"+secretPassword))
	code := codeOf(t, b.signIn(authorizeParams(), "ann@example.com", secretPassword), testRedirect)
	ti.token(t, passwordForm("victim@example.com", secretPassword), "", "")
	// Code reuse.
	_, tok := ti.token(t, exchangeForm(code, testVerifier), "", "")
	ti.token(t, exchangeForm(code, testVerifier), "", "")
	// Refresh token reuse.
	_, pw := ti.token(t, passwordForm("ann@example.com", secretPassword), "", "")
	refresh := url.Values{"grant_type": {"refresh_token"}, "client_id": {CLIClientID}, "refresh_token": {pw.RefreshToken}}
	ti.token(t, refresh, "", "")
	ti.token(t, refresh, "", "")
	// A client_credentials failure and a grant the client may not use.
	ti.token(t, url.Values{"grant_type": {"client_credentials"}}, OperatorClientID, "guessed-secret")
	ti.token(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, OperatorClientID, testOperatorSecret)
	// A role change.
	if _, err := ti.setRole(ti.operatorToken(t), operatorCaller, "ann@example.com", authv1.Role_ROLE_ADMIN, true); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		event string
		want  map[string]any
	}{
		{auditLoginFailed, map[string]any{"email_hash": emailDigest("ann@example.com"), "client_id": CLIClientID}},
		{auditLoginFailed, map[string]any{"email_hash": emailDigest("victim@example.com"), "client_id": CLIClientID}},
		{auditLoginSucceeded, map[string]any{"client_id": CLIClientID}},
		{auditCodeReused, map[string]any{"client_id": CLIClientID}},
		{auditRefreshReused, map[string]any{"client_id": CLIClientID, "how": "replayed"}},
		{auditClientAuthFailed, map[string]any{"client_id": OperatorClientID, "error": "invalid_client"}},
		{auditGrantRefused, map[string]any{"client_id": OperatorClientID, "grant_type": "refresh_token", "error": "unauthorized_client"}},
		{auditRoleChanged, map[string]any{"from": "rider", "to": "admin"}},
	} {
		found := false
		for _, line := range ti.logs.audits(t, tc.event) {
			match := true
			for k, v := range tc.want {
				match = match && line[k] == v
			}
			found = found || match
		}
		if !found {
			t.Errorf("no %s audit line with %v; lines: %v", tc.event, tc.want, ti.logs.audits(t, tc.event))
		}
	}
	all := ti.logs.String()
	for _, secret := range []string{secretPassword, testOperatorSecret, "guessed-secret", "victim@example.com", code, tok.AccessToken, pw.RefreshToken} {
		if strings.Contains(all, secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", all)
	}
}

func TestEmailDigest(t *testing.T) {
	d := emailDigest(" Ann@Example.com ")
	if d != emailDigest("ann@example.com") || d == emailDigest("bob@example.com") || len(d) != 12 || strings.Contains(d, "ann") {
		t.Errorf("emailDigest = %q", d)
	}
}
