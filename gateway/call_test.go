package gateway

import "testing"

func TestClientIP(t *testing.T) {
	trusted, err := parseProxies([]string{"10.0.0.0/8", "192.168.1.7"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		ps     proxies
		remote string
		xff    []string
		want   string
	}{
		{"no proxies: header ignored", nil, "203.0.113.9:4000", []string{"1.2.3.4"}, "203.0.113.9"},
		{"untrusted peer: header ignored", trusted, "203.0.113.9:4000", []string{"1.2.3.4"}, "203.0.113.9"},
		{"trusted peer: last untrusted hop", trusted, "10.1.2.3:80", []string{"1.2.3.4, 198.51.100.2"}, "198.51.100.2"},
		{"chain of trusted proxies", trusted, "10.1.2.3:80", []string{"198.51.100.2", "192.168.1.7, 10.9.9.9"}, "198.51.100.2"},
		{"all hops trusted: the leftmost", trusted, "10.1.2.3:80", []string{"10.0.0.5"}, "10.0.0.5"},
		{"garbage hop stops the walk", trusted, "10.1.2.3:80", []string{"1.2.3.4, not-an-ip"}, "10.1.2.3"},
		{"ipv6 and mapped v4", nil, "[::ffff:127.0.0.1]:5", nil, "127.0.0.1"},
		{"unparsable remote", nil, "bufconn", nil, unknownClientAddr},
	}
	for _, tc := range cases {
		if got := tc.ps.clientIP(tc.remote, tc.xff); got != tc.want {
			t.Errorf("%s: clientIP(%q, %q) = %q, want %q", tc.name, tc.remote, tc.xff, got, tc.want)
		}
	}
	if _, err := parseProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("parseProxies accepted 10.0.0.0/33")
	}
}

func TestIncomingHeaderNeverTakesPorticoKeys(t *testing.T) {
	for _, h := range []string{"X-Portico-Consumer", "X-Portico-Internal-Route", "x-portico-scopes"} {
		if k, ok := incomingHeader(h); ok {
			t.Errorf("incomingHeader(%q) forwarded as %q", h, k)
		}
	}
	if k, ok := incomingHeader("X-Api-Key"); !ok || k != "x-api-key" {
		t.Errorf("incomingHeader(X-Api-Key) = %q %v", k, ok)
	}
}

func TestHeaderSafe(t *testing.T) {
	for in, want := range map[string]string{
		"alice": "alice", "josé": "jos%C3%A9", "a b": "a%20b", "100%": "100%25", "tab\t": "tab%09",
	} {
		if got := headerSafe(in); got != want {
			t.Errorf("headerSafe(%q) = %q, want %q", in, got, want)
		}
	}
}
