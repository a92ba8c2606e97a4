package clientip

import "testing"

func TestFromRemote(t *testing.T) {
	trusted, err := Parse([]string{"10.0.0.0/8", "192.168.1.7"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		ps     Trusted
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
		{"unparsable remote", nil, "bufconn", nil, Unknown},
		{"bare host", trusted, "203.0.113.9", nil, "203.0.113.9"},
		{"trusted bare host", trusted, "10.1.2.3", []string{"198.51.100.2"}, "198.51.100.2"},
	}
	for _, tc := range cases {
		if got := tc.ps.FromRemote(tc.remote, tc.xff); got != tc.want {
			t.Errorf("%s: FromRemote(%q, %q) = %q, want %q", tc.name, tc.remote, tc.xff, got, tc.want)
		}
	}
	if _, err := Parse([]string{"10.0.0.0/33"}); err == nil {
		t.Error("Parse accepted 10.0.0.0/33")
	}
}

// An untrusted IPv4 client, every REST call's case, costs no new string.
func TestFromRemoteAllocs(t *testing.T) {
	trusted, err := Parse([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = trusted.FromRemote("203.0.113.9:4000", nil) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
