package gateway

import (
	"net/http/httptest"
	"testing"
)

func TestClientAddr(t *testing.T) {
	cases := []struct {
		name, trusted, remote string
		xff                   []string
		want                  string
	}{
		{"peer", "", "203.0.113.9:4000", nil, "203.0.113.9"},
		{"forwarded-for ignored from an untrusted peer", "", "203.0.113.9:4000", []string{"1.2.3.4"}, "203.0.113.9"},
		{"forwarded-for ignored from a peer not in the list", "10.0.0.0/8", "203.0.113.9:4000", []string{"1.2.3.4"}, "203.0.113.9"},
		{"trusted proxy", "10.0.0.0/8", "10.1.2.3:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"client-chosen hops left of the real one", "10.0.0.0/8", "10.1.2.3:4000", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},
		{"two trusted hops", "10.0.0.0/8;192.168.0.1", "10.1.2.3:4000", []string{"6.6.6.6, 198.51.100.7, 192.168.0.1"}, "198.51.100.7"},
		{"several headers", "10.0.0.0/8", "10.1.2.3:4000", []string{"6.6.6.6", "198.51.100.7"}, "198.51.100.7"},
		{"garbage from the proxy", "10.0.0.0/8", "10.1.2.3:4000", []string{"not-an-ip"}, "10.1.2.3"},
		{"all hops trusted", "10.0.0.0/8", "10.1.2.3:4000", []string{"10.9.9.9"}, "10.9.9.9"},
		{"no header from a trusted proxy", "10.0.0.0/8", "10.1.2.3:4000", nil, "10.1.2.3"},
		{"single trusted address", "127.0.0.1", "127.0.0.1:1", []string{"198.51.100.7"}, "198.51.100.7"},
		{"IPv4-mapped peer", "", "[::ffff:203.0.113.9]:4000", nil, "203.0.113.9"},
		{"IPv6 keyed by /64", "", "[2001:db8:1:2:3:4:5:6]:4000", nil, "2001:db8:1:2::/64"},
		{"IPv6 neighbours share a /64", "", "[2001:db8:1:2:ffff::1]:4000", nil, "2001:db8:1:2::/64"},
		{"not TCP", "", "@", nil, "@"},
	}
	for _, c := range cases {
		ca, err := parseTrustedProxies(c.trusted)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := ca.of(r); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if _, err := parseTrustedProxies("10.0.0.0/8;nonsense"); err == nil {
		t.Error("a malformed trusted_proxies setting was accepted")
	}
}
