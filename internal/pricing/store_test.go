package pricing

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestStore is the store's contract, on every engine.
func TestStore(t *testing.T) {
	for _, eng := range testenv.Engines() {
		t.Run(eng.Name, func(t *testing.T) {
			ctx := context.Background()
			db := testenv.Migrate(t, eng.Open(t), Service.Migrations)
			s := &store{db: db}

			t.Run("default fare rules", func(t *testing.T) {
				rules, err := s.fareRules(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(rules) != 1 || rules["san-francisco"] != sf {
					t.Fatalf("rules = %+v, want only %+v", rules, sf)
				}
				if _, err := newRulebook(serviceAreas, rules); err != nil {
					t.Fatal(err)
				}
			})

			t.Run("supply, newest observation wins", func(t *testing.T) {
				t0 := time.Date(2026, 11, 2, 8, 0, 0, 123456000, time.UTC)
				got, err := s.supply(ctx, "z1")
				if err != nil || got != (Supply{Zone: "z1"}) {
					t.Fatalf("unknown zone = %+v, %v", got, err)
				}
				record := func(sup Supply) {
					t.Helper()
					if err := db.InTx(ctx, func(tx *sqldb.Tx) error { return s.recordSupplyTx(ctx, tx, sup) }); err != nil {
						t.Fatal(err)
					}
				}
				first := Supply{Zone: "z1", AvailableDrivers: 3, OpenRequests: 7, ObservedAt: t0}
				record(first)
				record(Supply{Zone: "z1", AvailableDrivers: 9, OpenRequests: 0, ObservedAt: t0.Add(-time.Second)})
				if got, _ := s.supply(ctx, "z1"); got != first {
					t.Fatalf("after an older report: %+v, want %+v", got, first)
				}
				later := Supply{Zone: "z1", AvailableDrivers: 4, OpenRequests: 2, ObservedAt: t0.Add(time.Second)}
				record(later)
				record(Supply{Zone: "z2", AvailableDrivers: 1, OpenRequests: 1, ObservedAt: t0})
				if got, _ := s.supply(ctx, "z1"); got != later {
					t.Fatalf("after a newer report: %+v, want %+v", got, later)
				}
				same := later
				same.OpenRequests = 5
				record(same)
				if got, _ := s.supply(ctx, "z1"); got != same {
					t.Fatalf("same instant, later write: %+v, want %+v", got, same)
				}
			})

			t.Run("quote secret is created once", func(t *testing.T) {
				a, err := s.quoteSecret(ctx)
				if err != nil {
					t.Fatal(err)
				}
				b, err := s.quoteSecret(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(a) != 32 || !bytes.Equal(a, b) {
					t.Fatalf("secrets %x and %x: want the same 32 bytes", a, b)
				}
			})
		})
	}
}
