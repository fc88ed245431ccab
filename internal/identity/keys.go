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
	"sync"

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

// keyring holds the signing keys, loaded from the database. The newest
// generation signs and every stored key is published, which is the shape
// rotation needs: a new key is inserted as the next generation, published
// before it signs, and an old one stays published until the tokens it
// signed have expired. Rotation itself is not built yet, so the ring is
// loaded once at start.
type keyring struct {
	db *sqldb.DB

	mu      sync.RWMutex
	signing *signingKey
	public  []op.Key
}

// load reads the keys, first generating the initial key if there is none.
func (k *keyring) load(ctx context.Context) error {
	if err := k.read(ctx); err == nil || !errors.Is(err, errNoKeys) {
		return err
	}
	if err := k.insertFirst(ctx); err != nil {
		return err
	}
	return k.read(ctx)
}

var errNoKeys = errors.New("identity: no signing keys")

// insertFirst generates a key and stores it as generation 1. Replicas that
// start together each try; the unique generation lets exactly one insert
// win and the others adopt its key when they read.
func (k *keyring) insertFirst(ctx context.Context) error {
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
			`INSERT INTO signing_keys (kid, generation, algorithm, private_key, created_at) VALUES ($1, $2, $3, $4, $5)
			 ON CONFLICT (generation) DO NOTHING`,
			kid, 1, string(signingAlgorithm), string(pemKey), sqldb.Micros(now()))
		if err != nil {
			return fmt.Errorf("identity: store signing key: %w", err)
		}
		return nil
	})
}

// read loads every stored key; the highest generation becomes the signer.
func (k *keyring) read(ctx context.Context) error {
	rows, err := k.db.Reader().QueryContext(ctx,
		`SELECT kid, algorithm, private_key FROM signing_keys ORDER BY generation DESC`)
	if err != nil {
		return fmt.Errorf("identity: read signing keys: %w", err)
	}
	defer rows.Close()
	var signing *signingKey
	var public []op.Key
	for rows.Next() {
		var kid, alg, pemKey string
		if err := rows.Scan(&kid, &alg, &pemKey); err != nil {
			return fmt.Errorf("identity: read signing keys: %w", err)
		}
		if alg != string(signingAlgorithm) {
			return fmt.Errorf("identity: signing key %s: unsupported algorithm %q", kid, alg)
		}
		priv, err := parsePrivateKey(pemKey)
		if err != nil {
			return fmt.Errorf("identity: signing key %s: %w", kid, err)
		}
		if signing == nil {
			signing = &signingKey{kid: kid, priv: priv}
		}
		public = append(public, &publicKey{kid: kid, pub: &priv.PublicKey})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("identity: read signing keys: %w", err)
	}
	if signing == nil {
		return errNoKeys
	}
	k.mu.Lock()
	k.signing, k.public = signing, public
	k.mu.Unlock()
	return nil
}

// current is the key that signs new tokens.
func (k *keyring) current() (*signingKey, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.signing == nil {
		return nil, errNoKeys
	}
	return k.signing, nil
}

// published is every key a token may have been signed with.
func (k *keyring) published() []op.Key {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return append([]op.Key(nil), k.public...)
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
