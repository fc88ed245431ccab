package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters: the first configuration of the OWASP Password Storage
// Cheat Sheet (m=19 MiB, t=2, p=1). Argon2id is memory-hard, so every guess
// costs an attacker 19 MiB of memory bandwidth, which is what makes GPU and
// ASIC cracking expensive; two passes over 19 MiB take tens of milliseconds on
// one server core, which a login can afford. p=1 keeps a hash on one core, so
// the number of hashes in flight (bounded by hasher.slots) is what bounds CPU
// and memory, not the parallelism inside each hash.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// errMalformedHash means a stored hash cannot be parsed; it is a data fault,
// never the caller's.
var errMalformedHash = errors.New("identity: malformed password hash")

// hashPassword returns password's argon2id hash in PHC string format, with a
// fresh random salt and the current parameters embedded, so that verification
// keeps working for old hashes after the parameters change.
func hashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("identity: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemoryKiB, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// verifyPassword reports whether password matches encoded. The comparison is
// constant-time so the time taken says nothing about how much matched.
func verifyPassword(encoded, password string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, errMalformedHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errMalformedHash
	}
	var memory, passes uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &memory, &passes, &threads); err != nil {
		return false, errMalformedHash
	}
	// Bounds keep a tampered row from turning one login into a 4 GiB
	// allocation or an hour of CPU.
	if passes < 1 || passes > 10 || threads < 1 || threads > 16 || memory < 8*uint32(threads) || memory > 1<<20 {
		return false, errMalformedHash
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return false, errMalformedHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return false, errMalformedHash
	}
	got := argon2.IDKey([]byte(password), salt, passes, memory, threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// hasher runs password hashing with a bound on how many hashes are in
// flight: each holds 19 MiB, so a burst of logins must queue rather than
// exhaust the process's memory.
type hasher struct {
	slots chan struct{}
	// dummy is the hash of a random password. Verifying against it when an
	// email is unknown makes "no such account" take as long as "wrong
	// password", so response time does not reveal which emails exist.
	dummy string
}

// newHasher allows concurrency hashes at once.
func newHasher(concurrency int) (*hasher, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("identity: dummy password: %w", err)
	}
	dummy, err := hashPassword(base64.RawStdEncoding.EncodeToString(secret))
	if err != nil {
		return nil, err
	}
	// The hash's 19 MiB of scratch memory is garbage now; hand it back to
	// the OS at once rather than keep it resident in an idle process.
	debug.FreeOSMemory()
	return &hasher{slots: make(chan struct{}, max(concurrency, 1)), dummy: dummy}, nil
}

// acquire waits for a hashing slot, or for ctx to end.
func (h *hasher) acquire(ctx context.Context) (release func(), err error) {
	select {
	case h.slots <- struct{}{}:
		return func() { <-h.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// hash is hashPassword within the concurrency bound.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	release, err := h.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	return hashPassword(password)
}

// verify is verifyPassword within the concurrency bound.
func (h *hasher) verify(ctx context.Context, encoded, password string) (bool, error) {
	release, err := h.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	return verifyPassword(encoded, password)
}

// burn verifies password against the dummy hash and discards the answer: the
// cost of a failed login for an unknown account.
func (h *hasher) burn(ctx context.Context, password string) {
	_, _ = h.verify(ctx, h.dummy, password)
}
