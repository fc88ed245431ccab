package identity

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// authRequest is one authorization code flow in progress (op.AuthRequest):
// created by /oauth2/authorize, completed by the login page, and consumed
// when its code is exchanged at /oauth2/token.
type authRequest struct {
	id                  string
	clientID            string
	redirectURI         string
	state               string
	nonce               string
	scopes              []string
	responseType        oidc.ResponseType
	responseMode        oidc.ResponseMode
	codeChallenge       string
	codeChallengeMethod string
	subject             string
	authTime            time.Time
	done                bool
}

var _ op.AuthRequest = (*authRequest)(nil)

func (a *authRequest) GetID() string                      { return a.id }
func (a *authRequest) GetACR() string                     { return "" }
func (a *authRequest) GetAudience() []string              { return audienceFor(a.clientID) }
func (a *authRequest) GetAuthTime() time.Time             { return a.authTime }
func (a *authRequest) GetClientID() string                { return a.clientID }
func (a *authRequest) GetNonce() string                   { return a.nonce }
func (a *authRequest) GetRedirectURI() string             { return a.redirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType { return a.responseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.responseMode }
func (a *authRequest) GetScopes() []string                { return a.scopes }
func (a *authRequest) GetState() string                   { return a.state }
func (a *authRequest) GetSubject() string                 { return a.subject }
func (a *authRequest) Done() bool                         { return a.done }

// GetAMR: a password is the only way to sign in.
func (a *authRequest) GetAMR() []string {
	if a.done {
		return []string{"pwd"}
	}
	return nil
}

func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.codeChallenge == "" {
		return nil
	}
	// The method passes through as sent, so that the library refuses one it
	// does not support instead of treating it as plain.
	return &oidc.CodeChallenge{Challenge: a.codeChallenge, Method: oidc.CodeChallengeMethod(a.codeChallengeMethod)}
}

// authRequests keeps auth requests.
type authRequests struct {
	db    *sqldb.DB
	audit auditor
}

const authRequestColumns = `id, client_id, redirect_uri, state, nonce, scopes, response_type, response_mode,
	code_challenge, code_challenge_method, subject, auth_time, done`

// create stores a request the library has validated against its client c.
// The redirect URI is checked again, exactly (client.redirectAllowed): the
// library lets a native client's loopback redirect differ in host and
// scheme as well as port. PKCE with S256 is required of every client, as
// OAuth 2.1 does: it is what stops an intercepted code from being redeemed;
// "plain" would hand the verifier to whoever sees the request. The
// id_token_hint's subject is not trusted to sign anyone in, so the request
// starts unsigned.
func (ars *authRequests) create(ctx context.Context, c *client, req *oidc.AuthRequest) (*authRequest, error) {
	// First, so that no later refusal is redirected to an address the
	// client never registered (an open redirector).
	if !c.redirectAllowed(req.RedirectURI) {
		return nil, oidc.ErrInvalidRequestRedirectURI().WithDescription("the redirect_uri is not registered for this client")
	}
	if slices.Contains(req.Prompt, oidc.PromptNone) {
		// Nobody is ever signed in without the login form: there are no
		// browser sessions to reuse.
		return nil, oidc.ErrLoginRequired()
	}
	if req.CodeChallenge == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge is required (PKCE)")
	}
	if req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	a := &authRequest{
		id: uuid.NewString(), clientID: req.ClientID, redirectURI: req.RedirectURI, state: req.State,
		nonce: req.Nonce, scopes: req.Scopes, responseType: req.ResponseType, responseMode: req.ResponseMode,
		codeChallenge: req.CodeChallenge, codeChallengeMethod: string(req.CodeChallengeMethod),
	}
	t := now()
	err := ars.db.InTx(ctx, func(tx *sqldb.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO auth_requests (id, client_id, redirect_uri, state, nonce, scopes,
				response_type, response_mode, code_challenge, code_challenge_method, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			a.id, a.clientID, a.redirectURI, a.state, a.nonce, strings.Join(a.scopes, " "),
			string(a.responseType), string(a.responseMode), a.codeChallenge, a.codeChallengeMethod,
			sqldb.Micros(t), sqldb.Micros(t.Add(authRequestLifetime)))
		if err != nil {
			return fmt.Errorf("identity: store auth request: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// byID reads a live request whose code has not been exchanged.
func (ars *authRequests) byID(ctx context.Context, id string) (*authRequest, error) {
	a, r, err := ars.read(ctx, `id = $1`, id)
	if err != nil {
		return nil, err
	}
	if r.redeemed {
		return nil, errors.New("identity: auth request already redeemed")
	}
	return a, nil
}

// byCode reads the signed-in request a code was issued for. A code that was
// exchanged already is being replayed: by an attacker who intercepted it,
// or by a client that lost the answer. Either way what the first exchange
// issued is revoked (OAuth 2.1, section 4.1.3), so a stolen code is worth
// nothing even if it was redeemed first by the thief.
func (ars *authRequests) byCode(ctx context.Context, code string) (*authRequest, error) {
	a, r, err := ars.read(ctx, `code_hash = $1`, tokenHash(code))
	if err != nil {
		return nil, err
	}
	if r.redeemed {
		err := ars.db.InTx(ctx, func(tx *sqldb.Tx) error {
			return revokeIssued(ctx, tx, r.familyID, r.accessTokenID, now())
		})
		if err != nil {
			return nil, oidc.ErrServerError().WithParent(err)
		}
		ars.audit.codeReused(ctx, a)
		return nil, errors.New("identity: authorization code reused")
	}
	if !a.done {
		return nil, errors.New("identity: auth request not signed in")
	}
	return a, nil
}

// redemption is what a request's row says about its code's exchange.
type redemption struct {
	redeemed      bool
	familyID      string
	accessTokenID string
	csrfHash      string
}

func (ars *authRequests) read(ctx context.Context, where string, arg string) (*authRequest, redemption, error) {
	a := &authRequest{}
	var r redemption
	var scopes, responseType, responseMode string
	var authTime, expires int64
	var redeemedAt sql.NullInt64
	err := ars.db.Reader().QueryRowContext(ctx,
		`SELECT `+authRequestColumns+`, expires_at, redeemed_at, family_id, access_token_id, csrf_hash
		 FROM auth_requests WHERE `+where, arg).
		Scan(&a.id, &a.clientID, &a.redirectURI, &a.state, &a.nonce, &scopes, &responseType, &responseMode,
			&a.codeChallenge, &a.codeChallengeMethod, &a.subject, &authTime, &a.done, &expires,
			&redeemedAt, &r.familyID, &r.accessTokenID, &r.csrfHash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, r, errors.New("identity: unknown auth request")
	}
	if err != nil {
		return nil, r, oidc.ErrServerError().WithParent(fmt.Errorf("identity: read auth request: %w", err))
	}
	if sqldb.Time(expires).Before(now()) {
		return nil, r, errors.New("identity: auth request expired")
	}
	r.redeemed = redeemedAt.Valid
	a.scopes = strings.Fields(scopes)
	a.responseType, a.responseMode = oidc.ResponseType(responseType), oidc.ResponseMode(responseMode)
	if authTime != 0 {
		a.authTime = sqldb.Time(authTime)
	}
	return a, r, nil
}

// saveCode records the code issued for a signed-in request. A request gets
// one code only.
func (ars *authRequests) saveCode(ctx context.Context, id, code string) error {
	return ars.db.InTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE auth_requests SET code_hash = $1 WHERE id = $2 AND done AND code_hash IS NULL`, tokenHash(code), id)
		if err != nil {
			return fmt.Errorf("identity: save code: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return oidc.ErrInvalidRequest().WithDescription("the authorization request cannot be given a code")
		}
		return nil
	})
}

// redeemAccess redeems a's code for the access token accessID alone (no
// refresh token was asked for), refusing a second redemption.
func (ars *authRequests) redeemAccess(ctx context.Context, a *authRequest, accessID string) error {
	var reused bool
	err := ars.db.InTx(ctx, func(tx *sqldb.Tx) error {
		var err error
		reused, err = redeem(ctx, tx, a.id, accessID, "", now())
		return err
	})
	if err != nil {
		return err
	}
	if reused {
		ars.audit.codeReused(ctx, a)
		return errCodeInvalid()
	}
	return nil
}

// redeem marks request id's code as exchanged at t, recording what the
// exchange issued, in tx: the transaction that issues the tokens. The
// update is conditional on the code not having been redeemed, so of two
// simultaneous exchanges of one code (each having read the request as
// unredeemed) exactly one commits the mark; the other finds it set. That
// one, and any later one, is a reuse: redeem revokes what the first
// exchange issued, in tx, and reports reused so the caller issues nothing
// and commits the revocation.
//
// The row outlives the exchange by redeemedRetention (its expiry moves),
// so that reuse is recognised after the request itself would have expired.
func redeem(ctx context.Context, tx *sqldb.Tx, id, accessID, family string, t time.Time) (reused bool, err error) {
	res, err := tx.ExecContext(ctx,
		`UPDATE auth_requests SET redeemed_at = $1, access_token_id = $2, family_id = $3, expires_at = $4
		 WHERE id = $5 AND done AND code_hash IS NOT NULL AND redeemed_at IS NULL AND expires_at > $6`,
		sqldb.Micros(t), accessID, family, sqldb.Micros(t.Add(redeemedRetention)), id, sqldb.Micros(t))
	if err != nil {
		return false, fmt.Errorf("identity: redeem code: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return false, nil
	}
	var redeemedAt sql.NullInt64
	var firstFamily, firstAccess string
	err = tx.QueryRowContext(ctx, `SELECT redeemed_at, family_id, access_token_id FROM auth_requests WHERE id = $1`, id).
		Scan(&redeemedAt, &firstFamily, &firstAccess)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !redeemedAt.Valid) {
		return false, errCodeInvalid() // expired meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("identity: read auth request: %w", err)
	}
	return true, revokeIssued(ctx, tx, firstFamily, firstAccess, t)
}

// revokeIssued revokes what one code exchange issued: its refresh token
// family and its access token. The access token is a JWT the gateway checks
// offline, so revoking it stops it at identity (userinfo, introspection)
// only; at the gateway it lives out its short lifetime.
func revokeIssued(ctx context.Context, tx *sqldb.Tx, family, accessID string, t time.Time) error {
	if family != "" {
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE family_id = $1`, family); err != nil {
			return fmt.Errorf("identity: revoke refresh tokens: %w", err)
		}
	}
	if accessID != "" {
		return revokeAccessTx(ctx, tx, accessID, t)
	}
	return nil
}

// errCodeInvalid is the answer to every code that cannot be exchanged.
func errCodeInvalid() error { return oidc.ErrInvalidGrant().WithDescription("invalid code") }

// remove is the library's "the code has been exchanged": the row stays,
// marked redeemed by the exchange itself, until redeemedRetention has
// passed, so that a replay of the code is recognised (see byCode).
func (ars *authRequests) remove(context.Context, string) error { return nil }

// beginLogin gives a live, not yet signed-in request a new CSRF token for
// its login form, replacing any earlier one, and returns the request.
func (ars *authRequests) beginLogin(ctx context.Context, id string) (*authRequest, string, error) {
	a, r, err := ars.read(ctx, `id = $1`, id)
	if err != nil || r.redeemed || a.done {
		return nil, "", errLoginExpired
	}
	csrf, err := randomToken()
	if err != nil {
		return nil, "", err
	}
	t := now()
	err = ars.db.InTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE auth_requests SET csrf_hash = $1 WHERE id = $2 AND NOT done AND expires_at > $3`,
			tokenHash(csrf), id, sqldb.Micros(t))
		if err != nil {
			return fmt.Errorf("identity: start login: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errLoginExpired
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return a, csrf, nil
}

// errLoginExpired: the request is unknown, expired or already signed in;
// the user has to start again from the application.
var errLoginExpired = errors.New("identity: the sign-in request is unknown or expired")

// forLogin returns the live, not yet signed-in request id, if csrf is the
// token its login form was given.
func (ars *authRequests) forLogin(ctx context.Context, id, csrf string) (*authRequest, error) {
	a, r, err := ars.read(ctx, `id = $1`, id)
	if err != nil || r.redeemed || a.done {
		return nil, errLoginExpired
	}
	if !csrfMatches(r.csrfHash, csrf) {
		return nil, errCSRF
	}
	return a, nil
}

// errCSRF: the form's token is not the one this request's form was given.
var errCSRF = errors.New("identity: the login form's CSRF token does not match")

// boundTo reports whether request id is signed in by the browser holding
// csrf, the login cookie: the only browser the code is issued to.
func (ars *authRequests) boundTo(ctx context.Context, id, csrf string) bool {
	a, r, err := ars.read(ctx, `id = $1`, id)
	return err == nil && a.done && !r.redeemed && csrfMatches(r.csrfHash, csrf)
}

func csrfMatches(hash, csrf string) bool {
	return hash != "" && csrf != "" && subtle.ConstantTimeCompare([]byte(hash), []byte(tokenHash(csrf))) == 1
}

// signIn marks request id signed in by subject, if its login form was
// given csrf and it is still waiting for a sign-in.
func (ars *authRequests) signIn(ctx context.Context, id, csrf, subject string) error {
	t := now()
	return ars.db.InTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE auth_requests SET subject = $1, auth_time = $2, done = TRUE
			 WHERE id = $3 AND csrf_hash = $4 AND NOT done AND expires_at > $5`,
			subject, sqldb.Micros(t), id, tokenHash(csrf), sqldb.Micros(t))
		if err != nil {
			return fmt.Errorf("identity: sign in: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errLoginExpired
		}
		return nil
	})
}
