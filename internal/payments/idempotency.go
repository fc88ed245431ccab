package payments

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// keyRetention is how long a finished idempotency key is kept: the
// contract promises at least 24 hours; the margin covers a saga that
// resumes a day-old ride after an outage.
const keyRetention = 48 * time.Hour

// keyedRequest is what every write request has.
type keyedRequest interface {
	proto.Message
	GetCaller() *authv1.Caller
	GetIdempotencyKey() string
}

// scopeOf is whose keys a request's key lives among: two callers may use
// the same key for different things.
func scopeOf(c *authv1.Caller) string {
	return c.GetRole().String() + ":" + c.GetUserId()
}

// checkKey validates the idempotency key itself.
func checkKey(key string) error {
	switch {
	case key == "":
		return apperr.E(apperr.Invalid, "idempotency_key_required", "idempotency_key is required")
	case len(key) > 255:
		return apperr.E(apperr.Invalid, "", "idempotency_key is at most 255 bytes")
	}
	return nil
}

// requestHash fingerprints what a request asks for: everything but who
// asks (the key's scope) and the key itself. Deterministic marshalling gives
// one encoding per message within a build, which is what compares.
func requestHash(m keyedRequest) (string, error) {
	c := proto.Clone(m)
	r := c.ProtoReflect()
	fields := r.Descriptor().Fields()
	for _, name := range []string{"caller", "idempotency_key"} {
		if f := fields.ByName(protoreflect.Name(name)); f != nil {
			r.Clear(f)
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(append([]byte(string(r.Descriptor().FullName())+"\x00"), b...))
	return hex.EncodeToString(h[:]), nil
}
