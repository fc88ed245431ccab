package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// signingAlgorithm is the one algorithm tokens are signed with. ES256 keys
// are small, signing is fast, and every JOSE library verifies it.
const signingAlgorithm = jose.ES256

// signingKey is a private key that signs tokens (op.SigningKey).
type signingKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return signingAlgorithm }
func (k *signingKey) Key() any                                    { return k.priv }
func (k *signingKey) ID() string                                  { return k.kid }

// publicKey is a key as the JWKS publishes it (op.Key).
type publicKey struct {
	kid string
	pub *ecdsa.PublicKey
}

func (k *publicKey) ID() string                         { return k.kid }
func (k *publicKey) Algorithm() jose.SignatureAlgorithm { return signingAlgorithm }
func (k *publicKey) Use() string                        { return "sig" }
func (k *publicKey) Key() any                           { return k.pub }

// Rotation timing. Every replica runs the same check; the database decides.
const (
	// defaultKeyRotation is how long a key signs before the next takes over
	// (setting identity.key_rotation). A day bounds what a leaked key is
	// worth without making verifiers refetch the JWKS often.
	defaultKeyRotation = 24 * time.Hour
	// minKeyRotation keeps the publish-ahead time (half the rotation when
	// the rotation is short) above keyCheckEvery, so that every replica has
	// loaded a key before it starts signing.
	minKeyRotation = time.Minute
	// keyPublishAhead is how long a new key sits in the JWKS before it
	// signs. Verifiers cache the JWKS: the gateway's refetches it every 5
	// minutes, and on an unknown kid at most once per 5 minutes, so a key
	// that signed the moment it appeared could be refused for minutes.
	keyPublishAhead = 10 * time.Minute
	// keyCheckEvery is how often each replica reloads the keys, rotates if
	// due and deletes keys nobody can need.
	keyCheckEvery = 15 * time.Second
	// keyLeeway covers verifiers' clock skew (the gateway allows 30 s) when
	// deciding that the last token a key signed has expired.
	keyLeeway = time.Minute
	// keyRetention is how long a key stays published after it stopped
	// signing: until every token it signed has expired.
	keyRetention = maxTokenLifetime + keyLeeway
)

// keyRotationFrom parses the identity.key_rotation setting.
func keyRotationFrom(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("identity: identity.key_rotation=%q: %w", s, err)
	}
	if d < minKeyRotation {
		return 0, fmt.Errorf("identity: identity.key_rotation=%s is shorter than the minimum %s", d, minKeyRotation)
	}
	return d, nil
}

// publishAhead is keyPublishAhead, or half the rotation when that is
// shorter (a demo rotating every few minutes).
func publishAhead(rotation time.Duration) time.Duration {
	return min(keyPublishAhead, rotation/2)
}

// keyring holds the signing keys, loaded from the database and reloaded
// every keyCheckEvery. Each key has a generation and a moment it activates:
//
//   - the signer is the newest generation that has activated;
//   - every key is published from the moment it is stored, so verifiers
//     know it before the first token it signs reaches them;
//   - a key stops signing when its successor activates, and stays published
//     for keyRetention after that, until every token it signed has expired;
//     then it is deleted.
//
// Every replica computes the same answer from the same rows and the time,
// so they switch keys together without talking to each other; the unique
// generation lets exactly one replica's new key win when several rotate at
// once.
type keyring struct {
	db *sqldb.DB
	// now is the clock (nil: the system clock); tests move it.
	now clock
	// rotation is how long each key signs; zero means defaultKeyRotation.
	rotation time.Duration
	log      *slog.Logger

	mu   sync.RWMutex
	keys []ringKey // newest generation first
}

// ringKey is one stored key.
type ringKey struct {
	kid         string
	generation  int64
	priv        *ecdsa.PrivateKey
	activatesAt time.Time
}

// load reads the keys, first generating the initial key if there is none.
func (k *keyring) load(ctx context.Context) error {
	if err := k.read(ctx); err == nil || !errors.Is(err, errNoKeys) {
		return err
	}
	// The first key signs at once: nobody holds a token yet, and a
	// verifier meeting its unknown kid fetches the JWKS.
	if err := k.insert(ctx, 1, k.now.now()); err != nil {
		return err
	}
	return k.read(ctx)
}

var errNoKeys = errors.New("identity: no signing keys")

// insert generates a key and stores it as generation gen, activating at
// activates. Replicas that try the same generation at once each generate
// a key; the unique generation lets exactly one insert win and the others
// adopt its key when they read.
func (k *keyring) insert(ctx context.Context, gen int64, activates time.Time) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("identity: generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("identity: encode signing key: %w", err)
	}
	kid, err := thumbprint(&priv.PublicKey)
	if err != nil {
		return err
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return k.db.InTx(ctx, func(tx *sqldb.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO signing_keys (kid, generation, algorithm, private_key, created_at, activates_at) VALUES ($1, $2, $3, $4, $5, $6)
			 ON CONFLICT (generation) DO NOTHING`,
			kid, gen, string(signingAlgorithm), string(pemKey), sqldb.Micros(k.now.now()), sqldb.Micros(activates))
		if err != nil {
			return fmt.Errorf("identity: store signing key: %w", err)
		}
		return nil
	})
}

// read loads every stored key, newest generation first.
func (k *keyring) read(ctx context.Context) error {
	rows, err := k.db.Reader().QueryContext(ctx,
		`SELECT kid, generation, algorithm, private_key, activates_at FROM signing_keys ORDER BY generation DESC`)
	if err != nil {
		return fmt.Errorf("identity: read signing keys: %w", err)
	}
	defer rows.Close()
	var keys []ringKey
	for rows.Next() {
		var kid, alg, pemKey string
		var gen, activates int64
		if err := rows.Scan(&kid, &gen, &alg, &pemKey, &activates); err != nil {
			return fmt.Errorf("identity: read signing keys: %w", err)
		}
		if alg != string(signingAlgorithm) {
			return fmt.Errorf("identity: signing key %s: unsupported algorithm %q", kid, alg)
		}
		priv, err := parsePrivateKey(pemKey)
		if err != nil {
			return fmt.Errorf("identity: signing key %s: %w", kid, err)
		}
		keys = append(keys, ringKey{kid: kid, generation: gen, priv: priv, activatesAt: sqldb.Time(activates)})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("identity: read signing keys: %w", err)
	}
	if len(keys) == 0 {
		return errNoKeys
	}
	k.mu.Lock()
	k.keys = keys
	k.mu.Unlock()
	return nil
}

// check is one round of the rotation worker: start the next key if the
// newest is due to be replaced, pick up what other replicas did, and delete
// keys that no live token can need.
func (k *keyring) check(ctx context.Context) error {
	if err := k.read(ctx); err != nil {
		return err
	}
	t := k.now.now()
	rotation := k.rotationPeriod()
	ahead := publishAhead(rotation)
	k.mu.RLock()
	newest := k.keys[0]
	k.mu.RUnlock()
	if !t.Before(newest.activatesAt.Add(rotation - ahead)) {
		activates := t.Add(ahead)
		if err := k.insert(ctx, newest.generation+1, activates); err != nil {
			return err
		}
		if err := k.read(ctx); err != nil {
			return err
		}
		if k.log != nil {
			k.mu.RLock()
			kid := k.keys[0].kid
			k.mu.RUnlock()
			k.log.InfoContext(ctx, "signing key rotation: next key published", "kid", kid,
				"generation", newest.generation+1, "activates_at", activates, "replaces", newest.kid)
		}
	}
	return k.dropRetired(ctx, t)
}

// dropRetired deletes the keys whose successor activated more than
// keyRetention ago: every token they signed has expired.
func (k *keyring) dropRetired(ctx context.Context, t time.Time) error {
	k.mu.RLock()
	var gone []string
	for i := 1; i < len(k.keys); i++ {
		if !t.Before(k.keys[i-1].activatesAt.Add(keyRetention)) {
			gone = append(gone, k.keys[i].kid)
		}
	}
	k.mu.RUnlock()
	if len(gone) == 0 {
		return nil
	}
	err := k.db.InTx(ctx, func(tx *sqldb.Tx) error {
		for _, kid := range gone {
			if _, err := tx.ExecContext(ctx, `DELETE FROM signing_keys WHERE kid = $1`, kid); err != nil {
				return fmt.Errorf("identity: delete signing key: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if k.log != nil {
		k.log.InfoContext(ctx, "signing key rotation: retired keys deleted", "kids", gone)
	}
	return k.read(ctx)
}

// run checks every period until ctx ends.
func (k *keyring) run(ctx context.Context, period time.Duration) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if err := k.check(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (k *keyring) rotationPeriod() time.Duration {
	if k.rotation <= 0 {
		return defaultKeyRotation
	}
	return k.rotation
}

// current is the key that signs new tokens: the newest that has activated.
func (k *keyring) current() (*signingKey, error) {
	t := k.now.now()
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, rk := range k.keys {
		if !rk.activatesAt.After(t) {
			return &signingKey{kid: rk.kid, priv: rk.priv}, nil
		}
	}
	return nil, errNoKeys
}

// published is every key a live token may have been signed with, and the
// keys about to sign.
func (k *keyring) published() []op.Key {
	t := k.now.now()
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]op.Key, 0, len(k.keys))
	for i, rk := range k.keys {
		// A key is retired once its successor activates; keep it while a
		// token it signed may still be alive.
		if i > 0 && !t.Before(k.keys[i-1].activatesAt.Add(keyRetention)) {
			continue
		}
		out = append(out, &publicKey{kid: rk.kid, pub: &rk.priv.PublicKey})
	}
	return out
}

// publicKeyByID is the published key kid, for verifying a token here.
func (k *keyring) publicKeyByID(kid string) (*ecdsa.PublicKey, bool) {
	for _, pk := range k.published() {
		if pk.ID() == kid {
			return pk.Key().(*ecdsa.PublicKey), true
		}
	}
	return nil, false
}

func parsePrivateKey(pemKey string) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(pemKey))
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PKCS #8 PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := key.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, errors.New("not a P-256 key")
	}
	return priv, nil
}

// thumbprint is the key's RFC 7638 JWK thumbprint, used as its kid: derived
// from the key itself, so it is unique without coordination.
func thumbprint(pub *ecdsa.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("identity: key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}
