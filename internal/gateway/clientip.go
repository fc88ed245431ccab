package gateway

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// clientAddrs finds who is at the other end of a request, for the
// anonymous rate limits. The peer's address is the truth unless the peer is
// a proxy the operator listed (gateway.trusted_proxies): only then is
// X-Forwarded-For read, from the right, skipping the trusted hops, since
// anything to the left of the first untrusted hop is whatever the client
// chose to send.
type clientAddrs struct {
	trusted []netip.Prefix
}

// parseTrustedProxies reads addresses and CIDR prefixes separated by
// spaces or semicolons (a comma would split the --set flag itself), e.g.
// "10.0.0.0/8;192.168.1.7".
func parseTrustedProxies(s string) (clientAddrs, error) {
	var c clientAddrs
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ';' || r == ',' }) {
		if p, err := netip.ParsePrefix(f); err == nil {
			c.trusted = append(c.trusted, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return clientAddrs{}, fmt.Errorf("gateway: gateway.trusted_proxies: %q is neither an address nor a CIDR prefix", f)
		}
		a = a.Unmap()
		c.trusted = append(c.trusted, netip.PrefixFrom(a, a.BitLen()))
	}
	return c, nil
}

func (c clientAddrs) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// of is the rate-limit key of r's client: its IPv4 address, or its IPv6
// /64 (one host usually holds a whole /64, so per-address keys would give
// it 2^64 buckets).
func (c clientAddrs) of(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr // not TCP (tests, unix sockets): one bucket per peer
	}
	client := ap.Addr().Unmap()
	if len(c.trusted) > 0 && c.isTrusted(client) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a trusted proxy passed garbage on: keep the last good hop
			}
			client = a.Unmap()
			if !c.isTrusted(client) {
				break
			}
		}
	}
	if client.Is6() {
		p, _ := client.WithZone("").Prefix(64)
		return p.String()
	}
	return client.String()
}
