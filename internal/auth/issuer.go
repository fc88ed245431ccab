package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Config says which issuer's tokens a Verifier trusts and how to read them.
// The built-in identity service and any standard OpenID Connect provider
// (Keycloak, Auth0, …) are configured the same way; only the issuer, where
// its keys are, and where it puts the role differ.
type Config struct {
	// Issuer is the exact "iss" every token must carry.
	Issuer string
	// JWKSURL is where the issuer publishes its keys. Empty means: read it
	// from the issuer's discovery document, Issuer +
	// "/.well-known/openid-configuration".
	JWKSURL string
	// Keys, if set, is a fixed key set used instead of fetching any (tests,
	// offline installations).
	Keys keyfunc.Keyfunc
	// Audience every token must name; default Audience.
	Audience string
	// RoleClaim is where the role is: a claim name or a dotted path into
	// nested claims, holding a string or a list; default "role".
	RoleClaim string
	// AllowMissingJTI accepts access tokens without a token id, for
	// providers that omit it (Auth0). Never for the built-in issuer, whose
	// ID tokens would then pass as access tokens.
	AllowMissingJTI bool
	// Client fetches discovery and keys; default a client with a timeout.
	Client *http.Client
	// Log receives refusals and fetch failures; default slog.Default().
	Log *slog.Logger
	// Now is the clock tokens are checked against; default time.Now.
	Now func() time.Time
}

// Fetch bounds.
const (
	fetchTimeout = 5 * time.Second
	// keysRefresh is how often published keys are fetched again, so a
	// key the issuer published ahead of rotating to it is known in time.
	keysRefresh = 5 * time.Minute
	// unknownKIDRefresh bounds refetches caused by tokens naming a key
	// nobody has seen: a stream of forged kids costs one fetch per period.
	unknownKIDRefresh = 30 * time.Second
	maxDiscovery      = 1 << 20
	// maxDiscoverWait bounds the pause between attempts to locate the keys.
	maxDiscoverWait = 5 * time.Second
)

// New builds a Verifier for cfg. When the issuer's keys cannot be fetched
// yet (its discovery document or its key set), New still succeeds: the
// fetch is retried in the background until ctx ends, and meanwhile Verify
// answers Unavailable, which callers retry, and Ready reports why.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("auth: no token issuer configured")
	}
	if cfg.Audience == "" {
		cfg.Audience = Audience
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = DefaultRoleClaim
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: fetchTimeout}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	v := &Verifier{cfg: cfg, log: cfg.Log,
		parser: jwt.NewParser(parserOptions(cfg, cfg.Audience)...), services: jwt.NewParser(parserOptions(cfg, ServiceAudience)...)}
	if cfg.Keys != nil {
		v.keys = cfg.Keys
		return v, nil
	}
	if err := v.discover(ctx); err != nil {
		v.log.Warn("token issuer's keys not reachable yet; retrying", "issuer", cfg.Issuer, "err", err)
		v.keysErr = err
		go v.keepDiscovering(ctx)
	}
	return v, nil
}

// parserOptions are the checks every token passes, for audience.
func parserOptions(cfg Config, audience string) []jwt.ParserOption {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(allowedAlgs),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		// Refuse non-canonical base64, so a signature has one spelling
		// and a flipped padding bit is not a second valid token.
		jwt.WithStrictDecoding(),
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	return opts
}

// remoteKeys fetches jwksURL in the background (the issuer may still be
// starting), again every keysRefresh, and when an unknown kid shows up.
func remoteKeys(ctx context.Context, cfg Config, jwksURL string) (keyfunc.Keyfunc, error) {
	// The first fetch must succeed: a key set that starts empty refuses
	// every valid token as unknown (401) until the next refresh minutes
	// later, while New's caller retries a failed fetch within seconds and
	// answers 503 meanwhile. The library starts its refresh loop before
	// that fetch, so a failed attempt cancels the loop it started.
	kctx, cancel := context.WithCancel(ctx)
	noErr := false
	keys, err := keyfunc.NewDefaultOverrideCtx(kctx, []string{jwksURL}, keyfunc.Override{
		Client:                    cfg.Client,
		HTTPTimeout:               fetchTimeout,
		NoErrorReturnFirstHTTPReq: &noErr,
		RefreshInterval:           keysRefresh,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(unknownKIDRefresh), 1),
		// A request never waits for the refetch limiter: an unknown kid
		// inside the period is refused at once.
		RateLimitWaitMax: fetchTimeout,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) { cfg.Log.Warn("jwks refresh failed", "url", u, "err", err) }
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("auth: jwks %s: %w", jwksURL, err)
	}
	context.AfterFunc(ctx, cancel) // a working key set refreshes as long as ctx lives
	return keys, nil
}

func (v *Verifier) keepDiscovering(ctx context.Context) {
	wait := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		err := v.discover(ctx)
		if err == nil {
			v.log.Info("token issuer found", "issuer", v.cfg.Issuer)
			return
		}
		v.mu.Lock()
		v.keysErr = err
		v.mu.Unlock()
		// Capped low: until the keys are in, every request is refused.
		wait = min(2*wait, maxDiscoverWait)
	}
}

// discover reads the issuer's discovery document for its jwks_uri and
// starts fetching the keys from there.
func (v *Verifier) discover(ctx context.Context) error {
	jwksURL := v.cfg.JWKSURL
	if jwksURL == "" {
		var err error
		if jwksURL, err = Discover(ctx, v.cfg.Client, v.cfg.Issuer); err != nil {
			return err
		}
	}
	keys, err := remoteKeys(ctx, v.cfg, jwksURL)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.keys, v.keysErr = keys, nil
	v.mu.Unlock()
	return nil
}

// Discover fetches issuer's OpenID Connect discovery document and returns
// its jwks_uri. The document must name the same issuer (OpenID Connect
// Discovery 1.0 section 4.3), and both URLs must be https, or http on a
// loopback address: keys fetched in the clear from afar could be anyone's.
func Discover(ctx context.Context, client *http.Client, issuer string) (string, error) {
	if err := secureURL(issuer); err != nil {
		return "", fmt.Errorf("auth: issuer: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	u := strings.TrimRight(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("auth: discovery: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("auth: discovery: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("auth: discovery %s: status %d", u, res.StatusCode)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, maxDiscovery)).Decode(&doc); err != nil {
		return "", fmt.Errorf("auth: discovery %s: %w", u, err)
	}
	if doc.Issuer != issuer {
		return "", fmt.Errorf("auth: discovery %s names issuer %q, not %q", u, doc.Issuer, issuer)
	}
	if err := secureURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("auth: discovery %s: jwks_uri: %w", u, err)
	}
	return doc.JWKSURI, nil
}

func secureURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if u.Hostname() == "localhost" {
			return nil
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
			return nil
		}
	}
	return fmt.Errorf("%q must be https (http only on a loopback address)", raw)
}
