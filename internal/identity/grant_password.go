package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	httphelper "github.com/zitadel/oidc/v3/pkg/http"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// maxTokenRequest bounds a token request's body: a form with a handful of
// short fields.
const maxTokenRequest = 16 << 10

// tokenEndpoint serves POST /oauth2/token. It answers the resource owner
// password grant itself, which the library deliberately does not implement,
// and hands every other grant to the library (next). The password grant
// mints its tokens with the library's own functions, storage and keys, so a
// token is the same whichever grant issued it.
type tokenEndpoint struct {
	// next is the library's token endpoint.
	next http.Handler
	// creator is the library's provider, whose storage, keys and crypto
	// every token is made with.
	creator  op.TokenCreator
	clients  *clients
	accounts passwordChecker
	issuer   string
	// dev enables the password grant. Production refuses it: a client that
	// collects passwords is exactly what OAuth exists to avoid, and it is
	// tolerated only for the first-party command line on a laptop.
	dev   bool
	audit auditor
}

// passwordChecker is what the password grant needs of the accounts.
type passwordChecker interface {
	// authenticate returns the account, or errBadCredentials whether the
	// email is unknown or the password wrong.
	authenticate(ctx context.Context, email, password string) (Account, error)
}

// ServeHTTP answers a password grant, or passes the request on, and
// records every refusal in the audit log, whichever grant it was: the
// library answers most of them itself, so its answer is read back here.
func (t *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Token responses must never be cached (RFC 6749, section 5.1); the
	// library does not say so itself.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	rec := &refusalRecorder{ResponseWriter: w}
	t.serve(rec, r)
	if rec.status >= http.StatusBadRequest && !rec.audited {
		t.auditRefusal(r, rec)
	}
}

func (t *tokenEndpoint) serve(w *refusalRecorder, r *http.Request) {
	if r.Method != http.MethodPost {
		t.next.ServeHTTP(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
	if err := r.ParseForm(); err != nil {
		op.RequestError(w, r, oidc.ErrInvalidRequest().WithDescription("malformed form body"), nil)
		return
	}
	// Only the body counts: credentials in a URL end up in logs.
	if r.PostForm.Get("grant_type") != string(grantTypePassword) {
		t.next.ServeHTTP(w, r)
		return
	}
	if !t.dev {
		op.RequestError(w, r, oidc.ErrUnsupportedGrantType().WithDescription("the password grant is only available in development mode"), nil)
		return
	}
	ctx := op.ContextWithIssuer(r.Context(), t.issuer)
	resp, err := t.passwordGrant(ctx, w, r)
	if err != nil {
		op.RequestError(w, r, err, nil)
		return
	}
	httphelper.MarshalJSON(w, resp)
}

// auditRefusal records a refused token request. A client_credentials
// request refused for its client is a failed client authentication, worth
// its own event: it is how a leaked or guessed operator secret shows.
func (t *tokenEndpoint) auditRefusal(r *http.Request, rec *refusalRecorder) {
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(rec.body.Bytes(), &body)
	grantType := r.PostForm.Get("grant_type")
	clientID := r.PostForm.Get("client_id")
	if id, _, ok := r.BasicAuth(); ok {
		clientID = id
	}
	if grantType == string(oidc.GrantTypeClientCredentials) && (body.Error == "invalid_client" || body.Error == "unauthorized_client") {
		t.audit.clientAuthFailed(r.Context(), r, clientID, body.Error)
		return
	}
	t.audit.grantRefused(r.Context(), r, grantType, clientID, body.Error, body.Description)
}

// refusalRecorder passes a response through, keeping its status and the
// start of its body, which for a refusal is the OAuth error.
type refusalRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
	// audited is set when the refusal was recorded as a more specific
	// event already (a failed password login).
	audited bool
}

func (rr *refusalRecorder) WriteHeader(status int) {
	if rr.status == 0 {
		rr.status = status
	}
	rr.ResponseWriter.WriteHeader(status)
}

func (rr *refusalRecorder) Write(b []byte) (int, error) {
	if rr.status == 0 {
		rr.status = http.StatusOK
	}
	if rr.status >= http.StatusBadRequest && rr.body.Len() < maxRecordedError {
		rr.body.Write(b[:min(len(b), maxRecordedError-rr.body.Len())])
	}
	return rr.ResponseWriter.Write(b)
}

// maxRecordedError is more than any OAuth error body the endpoint writes.
const maxRecordedError = 2 << 10

// passwordGrant checks the client and the user's credentials and issues
// tokens, or returns the OAuth error to answer.
func (t *tokenEndpoint) passwordGrant(ctx context.Context, w *refusalRecorder, r *http.Request) (*oidc.AccessTokenResponse, error) {
	c, err := t.client(ctx, r)
	if err != nil {
		return nil, err
	}
	scopes, ok := userScopesFrom(strings.Fields(r.PostForm.Get("scope")))
	if !ok {
		return nil, oidc.ErrInvalidScope().WithDescription("unknown scope; allowed: openid offline_access profile email")
	}
	username, password := r.PostForm.Get("username"), r.PostForm.Get("password")
	if username == "" || password == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("username and password are required")
	}
	acc, err := t.accounts.authenticate(ctx, username, password)
	if errors.Is(err, errBadCredentials) {
		t.audit.loginFailed(ctx, r, username, c.id)
		w.audited = true
		return nil, oidc.ErrInvalidGrant().WithDescription("invalid username or password")
	}
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(err)
	}
	t.audit.loginSucceeded(ctx, r, acc.ID, c.id)

	g := &grant{
		subject: acc.ID, clientID: c.id, scopes: scopes, audience: audienceFor(c.id),
		amr: []string{"pwd"}, authTime: now(),
	}
	// A refreshable grant is what makes the library ask the storage for a
	// refresh token as well (see refreshable).
	var req op.TokenRequest = g
	if slices.Contains(scopes, oidc.ScopeOfflineAccess) && c.allows(oidc.GrantTypeRefreshToken) {
		req = &refreshable{grant: g}
	}
	access, refresh, validity, err := op.CreateAccessToken(ctx, req, c.AccessTokenType(), t.creator, c, "")
	if err != nil {
		return nil, err
	}
	resp := &oidc.AccessTokenResponse{
		AccessToken:  access,
		RefreshToken: refresh,
		TokenType:    oidc.BearerToken,
		ExpiresIn:    uint64(validity.Seconds()),
		Scope:        scopes,
	}
	if slices.Contains(scopes, oidc.ScopeOpenID) {
		resp.IDToken, err = op.CreateIDToken(ctx, t.issuer, g, c.IDTokenLifetime(), access, "", t.creator.Storage(), c)
		if err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// client authenticates the client of a password grant: a client allowed
// the grant, with its secret if it has one.
func (t *tokenEndpoint) client(ctx context.Context, r *http.Request) (*client, error) {
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if bid, bsecret, ok := r.BasicAuth(); ok {
		if id != "" || secret != "" {
			return nil, oidc.ErrInvalidRequest().WithDescription("client authentication must not use more than one method")
		}
		id, secret = bid, bsecret
	}
	if id == "" {
		return nil, oidc.ErrInvalidClient().WithDescription("client_id is required")
	}
	c, err := t.clients.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !c.public() || secret != "" {
		if c, err = t.clients.authenticate(ctx, id, secret); err != nil {
			return nil, err
		}
	}
	if !c.allows(grantTypePassword) {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("the client may not use the password grant")
	}
	return c, nil
}
