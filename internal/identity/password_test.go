package identity

import (
	"context"
	"strings"
	"testing"
)

func TestPasswordHashRoundTrip(t *testing.T) {
	h1, err := hashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h1, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q is not a PHC argon2id string with the OWASP parameters", h1)
	}
	h2, err := hashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if h1 == h2 {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	for _, tc := range []struct {
		password string
		want     bool
	}{
		{"correct horse battery staple", true},
		{"correct horse battery stapl", false},
		{"Correct horse battery staple", false},
		{"", false},
	} {
		got, err := verifyPassword(h1, tc.password)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("verify(%q) = %v, want %v", tc.password, got, tc.want)
		}
	}
}

func TestPasswordVerifyRefusesMalformedHashes(t *testing.T) {
	good, err := hashPassword("password1")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$")
	for name, encoded := range map[string]string{
		"empty":           "",
		"bcrypt":          "$2a$10$abcdefghijklmnopqrstuu",
		"argon2i":         strings.Replace(good, "argon2id", "argon2i", 1),
		"wrong version":   strings.Replace(good, "v=19", "v=16", 1),
		"huge memory":     strings.Replace(good, "m=19456", "m=4194304", 1),
		"too many passes": strings.Replace(good, "t=2", "t=1000", 1),
		"bad salt":        strings.Join([]string{"", parts[1], parts[2], parts[3], "!!", parts[5]}, "$"),
		"short key":       strings.Join([]string{"", parts[1], parts[2], parts[3], parts[4], "AAAA"}, "$"),
	} {
		if _, err := verifyPassword(encoded, "password1"); err == nil {
			t.Errorf("%s: verify accepted %q", name, encoded)
		}
	}
}

func TestHasherHonoursContext(t *testing.T) {
	h, err := newHasher(1)
	if err != nil {
		t.Fatal(err)
	}
	h.slots <- struct{}{} // the only slot is taken
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.hash(ctx, "password1"); err == nil {
		t.Fatal("hash ran without a free slot after its context ended")
	}
}
