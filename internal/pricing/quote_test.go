package pricing

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

func testQuote(now time.Time) Quote {
	return Quote{
		Pickup: geo.Point{Lat: 37.7955, Lng: -122.3937}, Dropoff: geo.Point{Lat: 37.7599, Lng: -122.4148},
		Fare: 3075, Currency: "USD", Route: Route{Meters: 10_000, Seconds: 1200}, Surge: 15,
		Expires: now.Add(2 * time.Minute).Truncate(time.Millisecond),
	}
}

func TestQuoteRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	s := newQuoteSigner([]byte("k1"))
	for _, degraded := range []bool{false, true} {
		q := testQuote(now)
		q.Degraded = degraded
		got, ok := s.redeem(s.sign(q), q.Pickup, q.Dropoff, now)
		if !ok || got != q {
			t.Fatalf("redeem = %+v, %v; want %+v", got, ok, q)
		}
	}
	// The same coordinates after a lossy trip through text at 7 decimals
	// (about 1 cm) still match.
	q := testQuote(now)
	near := geo.Point{Lat: q.Pickup.Lat + 4e-8, Lng: q.Pickup.Lng - 4e-8}
	if _, ok := s.redeem(s.sign(q), near, q.Dropoff, now); !ok {
		t.Fatal("a pickup 1 cm off the quoted one was refused")
	}
}

func TestQuoteRefused(t *testing.T) {
	now := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	s := newQuoteSigner([]byte("k1"))
	q := testQuote(now)
	id := s.sign(q)

	// Rewrite the fare inside a genuine token, keeping its signature: what a
	// client trying to pay less would do.
	body, mac, _ := strings.Cut(strings.TrimPrefix(id, quotePrefix), ".")
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint64(raw, 1)
	cheaper := quotePrefix + base64.RawURLEncoding.EncodeToString(raw) + "." + mac
	macRaw, _ := base64.RawURLEncoding.DecodeString(mac)
	macRaw[0] ^= 0x80
	badMAC := quotePrefix + body + "." + base64.RawURLEncoding.EncodeToString(macRaw)

	other := q.Dropoff
	other.Lng += 0.001 // about 90 m away
	cases := []struct {
		name            string
		signer          *quoteSigner
		id              string
		pickup, dropoff geo.Point
		at              time.Time
	}{
		{"fare rewritten", s, cheaper, q.Pickup, q.Dropoff, now},
		{"signature altered", s, badMAC, q.Pickup, q.Dropoff, now},
		{"signed with another key", newQuoteSigner([]byte("k2")), id, q.Pickup, q.Dropoff, now},
		{"another dropoff", s, id, q.Pickup, other, now},
		{"pickup and dropoff swapped", s, id, q.Dropoff, q.Pickup, now},
		{"at expiry", s, id, q.Pickup, q.Dropoff, q.Expires},
		{"after expiry", s, id, q.Pickup, q.Dropoff, q.Expires.Add(time.Hour)},
		{"empty", s, "", q.Pickup, q.Dropoff, now},
		{"no signature", s, quotePrefix + body, q.Pickup, q.Dropoff, now},
		{"truncated body", s, quotePrefix + body[:10] + "." + mac, q.Pickup, q.Dropoff, now},
		{"other version", s, "q2" + strings.TrimPrefix(id, "q1"), q.Pickup, q.Dropoff, now},
		{"not base64", s, quotePrefix + "!!!." + mac, q.Pickup, q.Dropoff, now},
	}
	for _, c := range cases {
		if got, ok := c.signer.redeem(c.id, c.pickup, c.dropoff, c.at); ok {
			t.Errorf("%s: redeemed as %+v", c.name, got)
		}
	}
	if _, ok := s.redeem(id, q.Pickup, q.Dropoff, q.Expires.Add(-time.Millisecond)); !ok {
		t.Error("refused a millisecond before expiry")
	}
}
