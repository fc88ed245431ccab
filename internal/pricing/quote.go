package pricing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"math"
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Quote is a priced trip the platform promises to honour until Expires.
type Quote struct {
	Pickup, Dropoff geo.Point
	Fare            int64
	Currency        string
	Route           Route
	Surge           Surge
	Degraded        bool
	Expires         time.Time
}

// quoteSigner makes quotes self-contained: the quote id is the quote itself
// plus an HMAC, so Estimate stores nothing and any replica can redeem a quote
// another issued (they share the key). A quote cannot be revoked before it
// expires; with a two-minute lifetime that is the right trade.
type quoteSigner struct {
	key []byte
}

// quoteKeyLabel separates this use of the secret from any other.
const quoteKeyLabel = "rideshare/pricing/quote/v1"

// newQuoteSigner derives the signing key from secret (the pricing.quote_key
// setting, or the random secret kept in the pricing database).
func newQuoteSigner(secret []byte) *quoteSigner {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(quoteKeyLabel))
	return &quoteSigner{key: m.Sum(nil)}
}

// The token is "q1." + base64url(body) + "." + base64url(HMAC-SHA256(body)).
// body is fixed-width big-endian: fare, currency (3 bytes), metres, seconds,
// surge tenths, degraded, the four coordinates in microdegrees, expiry in
// unix milliseconds.
const (
	quotePrefix  = "q1."
	quoteBodyLen = 8 + 3 + 8 + 8 + 8 + 1 + 4*8 + 8
)

// sign returns q's quote id.
func (s *quoteSigner) sign(q Quote) string {
	b := make([]byte, 0, quoteBodyLen)
	b = binary.BigEndian.AppendUint64(b, uint64(q.Fare))
	b = append(b, (q.Currency + "   ")[:3]...)
	b = binary.BigEndian.AppendUint64(b, uint64(q.Route.Meters))
	b = binary.BigEndian.AppendUint64(b, uint64(q.Route.Seconds))
	b = binary.BigEndian.AppendUint64(b, uint64(q.Surge))
	if q.Degraded {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	for _, c := range microdegrees(q.Pickup, q.Dropoff) {
		b = binary.BigEndian.AppendUint64(b, uint64(c))
	}
	b = binary.BigEndian.AppendUint64(b, uint64(q.Expires.UnixMilli()))
	enc := base64.RawURLEncoding
	return quotePrefix + enc.EncodeToString(b) + "." + enc.EncodeToString(s.mac(b))
}

func (s *quoteSigner) mac(body []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write(body)
	return m.Sum(nil)
}

// redeem returns the quote id names if it is genuine, unexpired at now and
// for the same pickup and dropoff. Anything else (malformed, tampered,
// signed with another key, expired, other points) is reported as not ok and
// the caller prices afresh: a rider who held a quote too long sees the
// current price, never an error.
func (s *quoteSigner) redeem(id string, pickup, dropoff geo.Point, now time.Time) (Quote, bool) {
	rest, ok := strings.CutPrefix(id, quotePrefix)
	if !ok {
		return Quote{}, false
	}
	bodyPart, macPart, ok := strings.Cut(rest, ".")
	if !ok {
		return Quote{}, false
	}
	enc := base64.RawURLEncoding
	body, err := enc.DecodeString(bodyPart)
	if err != nil || len(body) != quoteBodyLen {
		return Quote{}, false
	}
	mac, err := enc.DecodeString(macPart)
	if err != nil || !hmac.Equal(mac, s.mac(body)) {
		return Quote{}, false
	}
	next := func(n int) []byte { v := body[:n]; body = body[n:]; return v }
	u64 := func() int64 { return int64(binary.BigEndian.Uint64(next(8))) }
	q := Quote{Fare: u64(), Currency: string(next(3))}
	q.Route = Route{Meters: u64(), Seconds: u64()}
	q.Surge = Surge(u64())
	q.Degraded = next(1)[0] == 1
	var coords [4]int64
	for i := range coords {
		coords[i] = u64()
	}
	q.Expires = time.UnixMilli(u64()).UTC()
	if coords != microdegrees(pickup, dropoff) || !now.Before(q.Expires) {
		return Quote{}, false
	}
	q.Pickup, q.Dropoff = pickup, dropoff
	return q, true
}

// microdegrees is the points at the precision a quote is bound to (about
// 0.1 m): a client that sends back the coordinates it was quoted for, after
// any JSON or protobuf round trip, matches; a different address does not.
func microdegrees(pickup, dropoff geo.Point) [4]int64 {
	r := func(v float64) int64 { return int64(math.Round(v * 1e6)) }
	return [4]int64{r(pickup.Lat), r(pickup.Lng), r(dropoff.Lat), r(dropoff.Lng)}
}
