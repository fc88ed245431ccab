package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// APIAudience is in the audience of every access token: the rideshare API.
// The gateway refuses tokens that do not name it.
//
// Every user's token names the whole API rather than one service, on
// purpose. Per-service audiences ("rideshare-rides", "rideshare-payments")
// would let each service refuse a token minted for another, so a token
// leaked from one service's logs could not be replayed against a second.
// But a user's token reaches a service only forwarded by the gateway,
// beside the gateway's own service token, and is checked only against the
// Caller of that call; a replayed one gets nowhere without a service's
// credential. Adding them later is a resource parameter (RFC 8707) at the
// token endpoint and an audience check per service; "rideshare" stays in
// every user's token so the gateway keeps working. Services' own tokens
// name auth.ServiceAudience instead (audienceFor).
const APIAudience = "rideshare"

// Lifetimes.
const (
	// accessTokenLifetime is short because access tokens are JWTs checked
	// locally by the gateway: revoking one cannot reach the gateway, so
	// expiry is what bounds a stolen token.
	accessTokenLifetime = 15 * time.Minute
	idTokenLifetime     = 15 * time.Minute
	// refreshTokenLifetime is how long an unused refresh token lasts; each
	// use rotates it and starts a new period.
	refreshTokenLifetime = 30 * 24 * time.Hour
	// authRequestLifetime bounds the browser sign-in, code exchange included.
	authRequestLifetime = 10 * time.Minute
	// redeemedRetention is how long an exchanged code is remembered, so that
	// presenting it again revokes what it issued. Past this the code is
	// merely unknown, and the access token it issued has long expired.
	redeemedRetention = 24 * time.Hour
	// maxTokenLifetime is the longest any signed token lives: a signing key
	// stays published at least this long after it stopped signing.
	maxTokenLifetime = max(accessTokenLifetime, idTokenLifetime)
)

// tokens keeps refresh tokens and the ids of revoked access tokens.
type tokens struct {
	db    *sqldb.DB
	audit auditor
	// now dates access tokens; nil is the system clock.
	now clock
}

// accessToken names a new access token for req: its jti and expiry. Access
// tokens are self-contained, so nothing is stored.
func (ts *tokens) accessToken(req op.TokenRequest) (id string, exp time.Time) {
	lifetime := accessTokenLifetime
	if id, err := clientIDOf(req); err == nil {
		if _, ok := auth.ServiceOfClient(id); ok {
			lifetime = serviceTokenLifetime
		}
	}
	return uuid.NewString(), ts.now.now().Add(lifetime)
}

// issueRefresh stores and returns a new refresh token for req, issued
// alongside the access token accessID. With current set it rotates:
// current is marked used in the same transaction and the new token joins
// its family, keeping its scopes (RFC 6749 section 6: a refresh token's
// scope never changes, even when one refresh asked for fewer). If current
// was used already, or concurrently, nothing is issued and its family is
// revoked. For an authorization code exchange (req is the auth request) the
// code is redeemed in the same transaction, so two exchanges of one code
// cannot both succeed (see redeem).
func (ts *tokens) issueRefresh(ctx context.Context, req op.TokenRequest, current, accessID string) (string, error) {
	clientID, err := clientIDOf(req)
	if err != nil {
		return "", err
	}
	token, err := randomToken()
	if err != nil {
		return "", err
	}
	amr, authTime := []string(nil), now()
	if r, ok := req.(op.IDTokenRequest); ok {
		amr, authTime = r.GetAMR(), r.GetAuthTime()
	}
	t := now()
	family, scopes := uuid.NewString(), strings.Join(req.GetScopes(), " ")
	var reused bool
	err = ts.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if ar, ok := req.(*authRequest); ok && current == "" {
			var err error
			if reused, err = redeem(ctx, tx, ar.id, accessID, family, t); err != nil || reused {
				return err
			}
		}
		if current != "" {
			err := tx.QueryRowContext(ctx,
				`UPDATE refresh_tokens SET rotated_at = $1 WHERE id = $2 AND rotated_at IS NULL AND expires_at > $3
				 RETURNING family_id, scopes`,
				sqldb.Micros(t), tokenHash(current), sqldb.Micros(t)).Scan(&family, &scopes)
			if errors.Is(err, sql.ErrNoRows) {
				// Read as live a moment ago: either it expired or was
				// revoked since, or a concurrent request rotated it first,
				// which is a replay like any other.
				reused, err = revokeIfRotated(ctx, tx, tokenHash(current))
				if err != nil || reused {
					return err
				}
				return oidc.ErrInvalidGrant().WithDescription("the refresh token is no longer valid")
			}
			if err != nil {
				return fmt.Errorf("identity: rotate refresh token: %w", err)
			}
		}
		_, err := tx.ExecContext(ctx,
			`INSERT INTO refresh_tokens (id, family_id, client_id, subject, scopes, audience, amr, auth_time, created_at, expires_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			tokenHash(token), family, clientID, req.GetSubject(), scopes,
			strings.Join(req.GetAudience(), " "), strings.Join(amr, " "), sqldb.Micros(authTime),
			sqldb.Micros(t), sqldb.Micros(t.Add(refreshTokenLifetime)))
		if err != nil {
			return fmt.Errorf("identity: store refresh token: %w", err)
		}
		return nil
	})
	switch {
	case err != nil:
		return "", err
	case reused && current == "":
		ts.audit.codeReused(ctx, req.(*authRequest))
		return "", errCodeInvalid()
	case reused:
		ts.audit.refreshReused(ctx, clientID, req.GetSubject(), "concurrent")
		return "", oidc.ErrInvalidGrant().WithDescription("the refresh token is no longer valid")
	}
	return token, nil
}

// revokeIfRotated revokes the family of the refresh token with hash id if
// that token was rotated already, and reports whether it was.
func revokeIfRotated(ctx context.Context, tx *sqldb.Tx, id string) (bool, error) {
	var family string
	var rotated sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT family_id, rotated_at FROM refresh_tokens WHERE id = $1`, id).Scan(&family, &rotated)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !rotated.Valid) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("identity: read refresh token: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE family_id = $1`, family); err != nil {
		return false, fmt.Errorf("identity: revoke refresh tokens: %w", err)
	}
	return true, nil
}

// byRefreshToken is the grant behind a live refresh token. A token that was
// already rotated is being replayed, by an attacker or by a client that lost
// the answer: either way the whole family is revoked (OAuth 2.1 section
// 4.3.1), so a stolen token stops working once both parties have used it.
func (ts *tokens) byRefreshToken(ctx context.Context, token string) (*refreshable, error) {
	var family, scopes, audience, amr string
	var authTime, expires int64
	var rotated sql.NullInt64
	g := &grant{}
	err := ts.db.Reader().QueryRowContext(ctx,
		`SELECT family_id, client_id, subject, scopes, audience, amr, auth_time, expires_at, rotated_at
		 FROM refresh_tokens WHERE id = $1`, tokenHash(token)).
		Scan(&family, &g.clientID, &g.subject, &scopes, &audience, &amr, &authTime, &expires, &rotated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errors.New("identity: unknown refresh token")
	}
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(fmt.Errorf("identity: read refresh token: %w", err))
	}
	if rotated.Valid {
		if err := ts.revokeFamily(ctx, family); err != nil {
			return nil, oidc.ErrServerError().WithParent(err)
		}
		ts.audit.refreshReused(ctx, g.clientID, g.subject, "replayed")
		return nil, errors.New("identity: refresh token reused")
	}
	if sqldb.Time(expires).Before(now()) {
		return nil, errors.New("identity: refresh token expired")
	}
	g.scopes, g.audience, g.amr = strings.Fields(scopes), strings.Fields(audience), strings.Fields(amr)
	g.authTime = sqldb.Time(authTime)
	return &refreshable{grant: g}, nil
}

// refreshInfo is the subject and id of a refresh token, for revocation.
func (ts *tokens) refreshInfo(ctx context.Context, token string) (subject, id string, err error) {
	id = tokenHash(token)
	err = ts.db.Reader().QueryRowContext(ctx, `SELECT subject FROM refresh_tokens WHERE id = $1`, id).Scan(&subject)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", op.ErrInvalidRefreshToken
	}
	if err != nil {
		return "", "", fmt.Errorf("identity: read refresh token: %w", err)
	}
	return subject, id, nil
}

// revoke revokes a token for clientID (RFC 7009). The library hands over a
// refresh token's id or a verified access token's jti (userID set), or, when
// it recognised neither, the raw token (userID empty), which can then only
// be a refresh token sent with the hint "access_token".
func (ts *tokens) revoke(ctx context.Context, tokenOrID, userID, clientID string) *oidc.Error {
	id := tokenOrID
	if userID == "" {
		id = tokenHash(tokenOrID)
	}
	var family, owner string
	err := ts.db.Reader().QueryRowContext(ctx,
		`SELECT family_id, client_id FROM refresh_tokens WHERE id = $1`, id).Scan(&family, &owner)
	switch {
	case err == nil:
		if owner != clientID {
			return oidc.ErrInvalidClient().WithDescription("the token was not issued to this client")
		}
		// Revoking a refresh token ends the sign-in it belongs to.
		if err := ts.revokeFamily(ctx, family); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
		return nil
	case errors.Is(err, sql.ErrNoRows) && userID != "":
		// A verified access token. Its client is not recorded (the token is
		// stateless), but whoever holds a valid bearer token may use it, so
		// letting them revoke it grants nothing.
		if err := ts.revokeAccess(ctx, tokenOrID); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return nil // not a token of ours: RFC 7009 answers success anyway
	default:
		return oidc.ErrServerError().WithParent(fmt.Errorf("identity: read refresh token: %w", err))
	}
}

// revokeAccess records an access token id as revoked until the token would
// have expired anyway. The gateway does not consult it (it checks tokens
// offline); userinfo and introspection here do.
func (ts *tokens) revokeAccess(ctx context.Context, jti string) error {
	return ts.db.InTx(ctx, func(tx *sqldb.Tx) error {
		return revokeAccessTx(ctx, tx, jti, ts.now.now())
	})
}

// revokeAccessTx records jti as revoked in tx, until the token expires.
func revokeAccessTx(ctx context.Context, tx *sqldb.Tx, jti string, t time.Time) error {
	_, err := tx.ExecContext(ctx,
		`INSERT INTO revoked_tokens (token_id, expires_at) VALUES ($1, $2) ON CONFLICT (token_id) DO NOTHING`,
		jti, sqldb.Micros(t.Add(accessTokenLifetime)))
	if err != nil {
		return fmt.Errorf("identity: revoke access token: %w", err)
	}
	return nil
}

// revoked reports whether an access token id was revoked.
func (ts *tokens) revoked(ctx context.Context, jti string) (bool, error) {
	var n int
	err := ts.db.Reader().QueryRowContext(ctx, `SELECT count(*) FROM revoked_tokens WHERE token_id = $1`, jti).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("identity: read revoked tokens: %w", err)
	}
	return n > 0, nil
}

func (ts *tokens) revokeFamily(ctx context.Context, family string) error {
	return ts.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE family_id = $1`, family); err != nil {
			return fmt.Errorf("identity: revoke refresh tokens: %w", err)
		}
		return nil
	})
}

// endSessions revokes every refresh token subject holds at clientID.
func (ts *tokens) endSessions(ctx context.Context, subject, clientID string) error {
	return ts.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE subject = $1 AND client_id = $2`, subject, clientID); err != nil {
			return fmt.Errorf("identity: end sessions: %w", err)
		}
		return nil
	})
}

// clientIDOf is the client a token request is for. Every request type the
// library hands the storage has one; a request without one is a bug.
func clientIDOf(req op.TokenRequest) (string, error) {
	if r, ok := req.(interface{ GetClientID() string }); ok && r.GetClientID() != "" {
		return r.GetClientID(), nil
	}
	return "", oidc.ErrServerError().WithDescription("token request without a client")
}

// randomToken is 256 bits from the system's CSPRNG, URL-safe: the form of
// refresh tokens and authorization codes.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("identity: random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenHash is how refresh tokens and codes are stored: a database dump then
// holds nothing that can be presented. Tokens are 256 random bits, so a fast
// hash is enough; there is nothing to brute-force.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
