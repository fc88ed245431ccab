package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
)

// The security events identity records. Each is one structured log line
// with "audit": true and "event": one of these, so that a log pipeline can
// route them to an audit store by a single field, and alert on the ones
// that mean an attack (code and refresh token reuse).
const (
	auditLoginFailed       = "login_failed"
	auditLoginSucceeded    = "login_succeeded"
	auditLoginRefused      = "login_refused" // the form itself was refused: stale or forged
	auditGrantRefused      = "grant_refused"
	auditClientAuthFailed  = "client_auth_failed"
	auditCodeReused        = "authorization_code_reused"
	auditRefreshReused     = "refresh_token_reused"
	auditRoleChanged       = "role_changed"
	auditRoleChangeRefused = "role_change_refused"
)

// auditor writes audit events. It never receives a password or a token,
// and an email only ever leaves through emailDigest. The zero value
// discards them.
type auditor struct {
	log *slog.Logger
}

// event records one security event. Attempts that failed are warnings so
// that they stand out at the default level; the rest are information.
func (a auditor) event(ctx context.Context, level slog.Level, name string, attrs ...slog.Attr) {
	if a.log == nil {
		return
	}
	attrs = append([]slog.Attr{slog.Bool("audit", true), slog.String("event", name)}, attrs...)
	a.log.LogAttrs(ctx, level, "audit: "+strings.ReplaceAll(name, "_", " "), attrs...)
}

// emailDigest stands for an email in the logs: the first 12 hex digits of
// its SHA-256, after the same normalisation sign-up applies. Repeated
// failures against one address share a digest, so an operator can see a
// guessing attack on one account, while the log holds no address. (A
// digest can be confirmed against a guessed address; it hides the address
// from casual readers and log exports, not from someone who already has a
// list to test.)
func emailDigest(email string) string {
	e := strings.ToLower(strings.TrimSpace(email))
	sum := sha256.Sum256([]byte(e))
	return hex.EncodeToString(sum[:6])
}

// remoteAttrs say where a request came from: the connection's peer and,
// behind the gateway, the client address it forwarded. The forwarded value
// is what the gateway says and is logged as such, never trusted for a
// decision.
func remoteAttrs(r *http.Request) []slog.Attr {
	attrs := []slog.Attr{slog.String("remote", r.RemoteAddr)}
	if f := r.Header.Get("X-Forwarded-For"); f != "" {
		attrs = append(attrs, slog.String("forwarded_for", f))
	}
	return attrs
}

// loginFailed: wrong email or password on the login page.
func (a auditor) loginFailed(ctx context.Context, r *http.Request, email, clientID string) {
	a.event(ctx, slog.LevelWarn, auditLoginFailed, append(remoteAttrs(r),
		slog.String("email_hash", emailDigest(email)), slog.String("client_id", clientID))...)
}

// loginSucceeded: an account signed in on the login page.
func (a auditor) loginSucceeded(ctx context.Context, r *http.Request, accountID, clientID string) {
	a.event(ctx, slog.LevelInfo, auditLoginSucceeded, append(remoteAttrs(r),
		slog.String("account_id", accountID), slog.String("client_id", clientID))...)
}

// loginRefused: a login form was refused before any password was checked
// (a stale or forged form, an expired request).
func (a auditor) loginRefused(ctx context.Context, r *http.Request, reason string) {
	a.event(ctx, slog.LevelWarn, auditLoginRefused, append(remoteAttrs(r), slog.String("reason", reason))...)
}

// grantRefused: the token endpoint answered an OAuth error.
func (a auditor) grantRefused(ctx context.Context, r *http.Request, grantType, clientID, oauthError, description string) {
	a.event(ctx, slog.LevelWarn, auditGrantRefused, append(remoteAttrs(r),
		slog.String("grant_type", grantType), slog.String("client_id", clientID),
		slog.String("error", oauthError), slog.String("error_description", description))...)
}

// clientAuthFailed: a client_credentials request whose client did not
// authenticate.
func (a auditor) clientAuthFailed(ctx context.Context, r *http.Request, clientID, oauthError string) {
	a.event(ctx, slog.LevelWarn, auditClientAuthFailed, append(remoteAttrs(r),
		slog.String("grant_type", "client_credentials"), slog.String("client_id", clientID),
		slog.String("error", oauthError))...)
}

// codeReused: an authorization code was presented after its exchange; what
// it issued has been revoked.
func (a auditor) codeReused(ctx context.Context, ar *authRequest) {
	a.event(ctx, slog.LevelWarn, auditCodeReused,
		slog.String("client_id", ar.clientID), slog.String("subject", ar.subject),
		slog.String("outcome", "tokens issued for the code revoked"))
}

// refreshReused: a rotated refresh token was presented again (how:
// "replayed" after its rotation, or "concurrent" with it); its family has
// been revoked.
func (a auditor) refreshReused(ctx context.Context, clientID, subject, how string) {
	a.event(ctx, slog.LevelWarn, auditRefreshReused,
		slog.String("client_id", clientID), slog.String("subject", subject), slog.String("how", how),
		slog.String("outcome", "refresh token family revoked"))
}

// roleChanged: an admin changed an account's role.
func (a auditor) roleChanged(ctx context.Context, actor, accountID, from, to string) {
	a.event(ctx, slog.LevelInfo, auditRoleChanged,
		slog.String("actor", actor), slog.String("account_id", accountID),
		slog.String("from", from), slog.String("to", to))
}

// roleChangeRefused: a SetRole call whose caller could not prove it is an
// admin.
func (a auditor) roleChangeRefused(ctx context.Context, actor, reason string) {
	a.event(ctx, slog.LevelWarn, auditRoleChangeRefused, slog.String("actor", actor), slog.String("reason", reason))
}
