package identity

import (
	"context"
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
	db *sqldb.DB
}

const authRequestColumns = `id, client_id, redirect_uri, state, nonce, scopes, response_type, response_mode,
	code_challenge, code_challenge_method, subject, auth_time, done`

// create stores a request the library has validated against its client.
// PKCE with S256 is required of every client, as OAuth 2.1 does: it is
// what stops an intercepted code from being redeemed. The id_token_hint's
// subject is not trusted to sign anyone in, so the request starts unsigned.
func (ars *authRequests) create(ctx context.Context, req *oidc.AuthRequest) (*authRequest, error) {
	if slices.Contains(req.Prompt, oidc.PromptNone) {
		// Nobody can be signed in without interaction yet.
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

// byID reads a live request.
func (ars *authRequests) byID(ctx context.Context, id string) (*authRequest, error) {
	return ars.read(ctx, `id = $1`, id)
}

// byCode reads the signed-in request a code was issued for.
func (ars *authRequests) byCode(ctx context.Context, code string) (*authRequest, error) {
	a, err := ars.read(ctx, `code_hash = $1`, tokenHash(code))
	if err != nil {
		return nil, err
	}
	if !a.done {
		return nil, errors.New("identity: auth request not signed in")
	}
	return a, nil
}

func (ars *authRequests) read(ctx context.Context, where string, arg string) (*authRequest, error) {
	a := &authRequest{}
	var scopes, responseType, responseMode string
	var authTime, expires int64
	err := ars.db.Reader().QueryRowContext(ctx,
		`SELECT `+authRequestColumns+`, expires_at FROM auth_requests WHERE `+where, arg).
		Scan(&a.id, &a.clientID, &a.redirectURI, &a.state, &a.nonce, &scopes, &responseType, &responseMode,
			&a.codeChallenge, &a.codeChallengeMethod, &a.subject, &authTime, &a.done, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errors.New("identity: unknown auth request")
	}
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(fmt.Errorf("identity: read auth request: %w", err))
	}
	if sqldb.Time(expires).Before(now()) {
		return nil, errors.New("identity: auth request expired")
	}
	a.scopes = strings.Fields(scopes)
	a.responseType, a.responseMode = oidc.ResponseType(responseType), oidc.ResponseMode(responseMode)
	if authTime != 0 {
		a.authTime = sqldb.Time(authTime)
	}
	return a, nil
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

// remove deletes a request: its code has been exchanged.
func (ars *authRequests) remove(ctx context.Context, id string) error {
	return ars.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM auth_requests WHERE id = $1`, id); err != nil {
			return fmt.Errorf("identity: delete auth request: %w", err)
		}
		return nil
	})
}
