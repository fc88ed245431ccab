package identity

import (
	"context"
	"testing"
)

// TestKeyringIsSharedAndDurable starts two keyrings on one database, as two
// replicas (or one restarted process) would: the first start generates the
// key, and every later one signs with that same key.
func TestKeyringIsSharedAndDurable(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	first, second := &keyring{db: db}, &keyring{db: db}
	if err := first.load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := second.load(ctx); err != nil {
		t.Fatal(err)
	}
	k1, err := first.current()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := second.current()
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID() != k2.ID() || !k1.priv.Equal(k2.priv) {
		t.Fatalf("replicas sign with different keys: %s and %s", k1.ID(), k2.ID())
	}
	if pub := second.published(); len(pub) != 1 || pub[0].ID() != k1.ID() || pub[0].Use() != "sig" {
		t.Fatalf("published keys = %v", pub)
	}
	if n := count(t, db, "signing_keys"); n != 1 {
		t.Fatalf("%d signing keys stored, want 1", n)
	}
}
