// Package clientip finds a call's client address behind the proxies the
// operator trusts (config trusted_proxies). Without trusted proxies
// X-Forwarded-For is ignored, so a client cannot choose its own address.
package clientip

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Unknown is the address of a client whose address cannot be read.
const Unknown = "unknown"

// Trusted lists the proxies whose X-Forwarded-For is believed.
type Trusted []netip.Prefix

// Parse reads CIDRs and single addresses.
func Parse(cidrs []string) (Trusted, error) {
	var out Trusted
	for _, c := range cidrs {
		if !strings.Contains(c, "/") {
			a, err := netip.ParseAddr(c)
			if err != nil {
				return nil, fmt.Errorf("trusted_proxies: %q: %w", c, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("trusted_proxies: %q: %w", c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (t Trusted) trusted(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// FromRemote finds the client behind remote (host:port or a bare host):
// when remote is a trusted proxy, X-Forwarded-For is read from the right,
// skipping trusted proxies; the first untrusted address is the client.
func (t Trusted) FromRemote(remote string, forwardedFor []string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return Unknown
	}
	if addr.Is4() && !t.trusted(addr) {
		// ParseAddr takes IPv4 only as String writes it: host is the
		// answer, and needs no new string (once for every REST call).
		return host
	}
	return t.FromAddr(addr, forwardedFor)
}

// FromAddr is FromRemote for a remote address already parsed.
func (t Trusted) FromAddr(addr netip.Addr, forwardedFor []string) string {
	if !t.trusted(addr) {
		return addr.Unmap().String()
	}
	var hops []string
	for _, v := range forwardedFor {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		addr = a
		if !t.trusted(a) {
			break
		}
	}
	return addr.Unmap().String()
}
