package platform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/singleflight"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// tokenFetchTimeout bounds one token request, whoever waits for it.
const tokenFetchTimeout = 5 * time.Second

// tokenRetryAfter is how long a failed token request is remembered: while
// identity is down, the calls that need a token fail at once rather than
// each sending identity another request.
const tokenRetryAfter = time.Second

// fetchFunc gets a new token and how long it lives.
type fetchFunc func(ctx context.Context) (token string, ttl time.Duration, err error)

// tokenSource is this process's service token. It is fetched on the first
// call that needs it, then refreshed once three quarters of its life have
// passed: the first call after that starts the refresh, and every call,
// that one too, goes on with the current token while it is still valid, so
// no call waits for a refresh. Only when there is no valid token do calls
// wait, all of them for the same single request to identity.
type tokenSource struct {
	fetch fetchFunc
	// base outlives any one call: a fetch that calls share is not
	// cancelled when the call that started it gives up.
	base  context.Context
	now   func() time.Time
	log   *slog.Logger
	group singleflight.Group

	mu       sync.Mutex
	cur      serviceToken
	err      error     // the last fetch's failure
	retryAt  time.Time // no new fetch before, after a failure
	fetching bool
}

type serviceToken struct {
	value                       string
	fetched, refreshAt, expires time.Time
}

// minForgetAge is how old a refused token must be to be dropped: a token
// refused right after it was fetched is not stale, and fetching another
// would only load identity with requests that change nothing.
const minForgetAge = 30 * time.Second

func newTokenSource(ctx context.Context, fetch fetchFunc, log *slog.Logger) *tokenSource {
	return &tokenSource{fetch: fetch, base: context.WithoutCancel(ctx), now: time.Now, log: logOrDiscard(log)}
}

// token is a valid service token, fetching one if needed.
func (s *tokenSource) token(ctx context.Context) (string, error) {
	now := s.now()
	s.mu.Lock()
	cur, failed, retryAt := s.cur, s.err, s.retryAt
	s.mu.Unlock()
	valid := cur.value != "" && now.Before(cur.expires)
	if valid && now.Before(cur.refreshAt) {
		return cur.value, nil
	}
	if failed != nil && now.Before(retryAt) {
		if valid {
			return cur.value, nil
		}
		return "", failed
	}
	ch := s.group.DoChan("token", s.refresh)
	if valid {
		return cur.value, nil
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", apperr.Wrap(ctx.Err(), apperr.Timeout, "", "gave up waiting for this service's token")
	}
}

// refresh fetches a new token and keeps it, unless a refresh that ended
// since the caller looked has done so already.
func (s *tokenSource) refresh() (any, error) {
	start := s.now()
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur.value != "" && start.Before(cur.refreshAt) {
		return cur.value, nil
	}
	ctx, cancel := context.WithTimeout(s.base, tokenFetchTimeout)
	defer cancel()
	tok, ttl, err := s.fetch(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.log.Warn("service token request failed", "err", err)
		s.err = apperr.Wrap(err, apperr.Unavailable, "", "this service cannot get its service token")
		s.retryAt = s.now().Add(tokenRetryAfter)
		return nil, s.err
	}
	s.cur = serviceToken{value: tok, fetched: start, refreshAt: start.Add(ttl * 3 / 4), expires: start.Add(ttl)}
	s.err = nil
	return tok, nil
}

// forget drops tok if it is still the current token and not brand new:
// the called service refused it (identity's keys were replaced, say), so
// the next call fetches a new one instead of sending it again until it
// expires.
func (s *tokenSource) forget(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.value == tok && s.now().Sub(s.cur.fetched) >= minForgetAge {
		s.cur = serviceToken{}
	}
}

// clientCredentials fetches tokens for clientID from identity's token
// endpoint with the client_credentials grant (RFC 6749, section 4.4).
func clientCredentials(client *http.Client, tokenURL, clientID, secret string) fetchFunc {
	return func(ctx context.Context) (string, time.Duration, error) {
		body := strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, body)
		if err != nil {
			return "", 0, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		// RFC 6749, section 2.3.1: both are form-encoded before basic auth.
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
		res, err := client.Do(req)
		if err != nil {
			return "", 0, err
		}
		defer res.Body.Close()
		var out struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int64  `json:"expires_in"`
			Error       string `json:"error"`
		}
		if err := json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&out); err != nil {
			return "", 0, fmt.Errorf("token endpoint %s: status %d: %w", tokenURL, res.StatusCode, err)
		}
		switch {
		case res.StatusCode != http.StatusOK:
			return "", 0, fmt.Errorf("token endpoint %s: status %d: %s", tokenURL, res.StatusCode, out.Error)
		case out.AccessToken == "" || out.ExpiresIn <= 0:
			return "", 0, errors.New("token endpoint " + tokenURL + ": no token or lifetime in the answer")
		}
		return out.AccessToken, time.Duration(out.ExpiresIn) * time.Second, nil
	}
}

// clientInterceptor puts this service's token, and the token of the user
// the call is made for if there is one, on every RPC it makes.
func (sa *ServiceAuth) clientInterceptor() connect.Interceptor { return tokenInterceptor{sa.tokens} }

type tokenInterceptor struct{ tokens *tokenSource }

// authorize sets h's tokens and returns the service token it set.
func (i tokenInterceptor) authorize(ctx context.Context, h http.Header) (string, error) {
	if ut := userToken(ctx); ut != "" {
		h.Set(UserTokenHeader, ut)
	}
	if i.tokens == nil {
		return "", nil // no credential: the callee refuses, and says why
	}
	tok, err := i.tokens.token(ctx)
	if err != nil {
		return "", err
	}
	h.Set("Authorization", "Bearer "+tok)
	return tok, nil
}

func (i tokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if !req.Spec().IsClient {
			return next(ctx, req)
		}
		tok, err := i.authorize(ctx, req.Header())
		if err != nil {
			return nil, err
		}
		res, err := next(ctx, req)
		// err is checked first: CodeOf allocates even for a nil error.
		if err != nil && tok != "" && connect.CodeOf(err) == connect.CodeUnauthenticated {
			i.tokens.forget(tok)
		}
		return res, err
	}
}

func (i tokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if _, err := i.authorize(ctx, conn.RequestHeader()); err != nil {
			return &failedConn{StreamingClientConn: conn, err: err}
		}
		return conn
	}
}

func (tokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// failedConn is a stream that could not be authorized. It fails on first
// use, as connect streams report their errors, and never touches the
// stream below, whose request was never sent: waiting for its response
// would wait forever.
type failedConn struct {
	connect.StreamingClientConn
	err error
}

func (c *failedConn) Send(any) error               { return c.err }
func (c *failedConn) Receive(any) error            { return c.err }
func (c *failedConn) CloseRequest() error          { return c.err }
func (c *failedConn) CloseResponse() error         { return nil }
func (c *failedConn) ResponseHeader() http.Header  { return http.Header{} }
func (c *failedConn) ResponseTrailer() http.Header { return http.Header{} }
