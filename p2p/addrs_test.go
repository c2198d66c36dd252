package p2p

import (
	"net"
	"slices"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func TestAddrPolicy_Filter(t *testing.T) {
	const relay = "/ip4/1.2.0.1/udp/4101/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
	const privRelay = "/ip4/10.1.0.2/udp/4101/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
	host := []string{"/ip4/127.0.0.1/tcp/4101", "/ip4/192.168.1.5/tcp/4101", "/ip4/1.2.3.4/tcp/4101", relay, privRelay}
	tests := []struct {
		name string
		cfg  Config
		in   []string
		want []string
	}{
		{"lan drops loopback", Config{Profile: ProfileLAN}, host,
			[]string{"/ip4/192.168.1.5/tcp/4101", "/ip4/1.2.3.4/tcp/4101", relay, privRelay}},
		{"loopback kept when nothing else", Config{Profile: ProfileWAN}, []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1"},
			[]string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1"}},
		{"wan keeps public only", Config{Profile: ProfileWAN}, host,
			[]string{"/ip4/1.2.3.4/tcp/4101", relay}},
		{"announce replaces direct addresses", Config{Profile: ProfileWAN, Announce: []string{"/dns4/catalog.example.com/tcp/4101"}}, host,
			[]string{relay, "/dns4/catalog.example.com/tcp/4101"}},
		{"announce keeps an explicit private address", Config{Profile: ProfileWAN, Announce: []string{"/ip4/10.9.9.9/tcp/1"}}, host,
			[]string{relay, "/ip4/10.9.9.9/tcp/1"}},
		{"append", Config{Profile: ProfileWAN, AnnounceAppend: []string{"/ip4/5.6.7.8/tcp/9"}}, host,
			[]string{"/ip4/1.2.3.4/tcp/4101", relay, "/ip4/5.6.7.8/tcp/9"}},
		{"no-announce wins over announce", Config{Profile: ProfileLAN, NoAnnounce: []string{"192.168.0.0/16", "5.6.7.0/24"}, AnnounceAppend: []string{"/ip4/5.6.7.8/tcp/9"}}, host,
			[]string{"/ip4/1.2.3.4/tcp/4101", relay, privRelay}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.cfg.addrPolicy()
			if err != nil {
				t.Fatal(err)
			}
			var in []ma.Multiaddr
			for _, s := range tc.in {
				in = append(in, ma.StringCast(s))
			}
			var got []string
			for _, a := range p.filter(in) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestConfig_RejectsBadAddressSettings(t *testing.T) {
	for _, c := range []Config{
		{KeyFile: "k", NoAnnounce: []string{"10.0.0.0"}},
		{KeyFile: "k", Announce: []string{"not a multiaddr"}},
		{KeyFile: "k", Profile: "moon"},
		{KeyFile: "k", DHTMode: "sometimes"},
		{KeyFile: "k", Reachability: "maybe"},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v: validate accepted it", c)
		}
	}
}

// TestPeer_ListenAddressInUseFails: a TCP listen address another socket
// holds fails New, as an HTTP address in use does, instead of sharing the
// port through SO_REUSEPORT; so does a UDP (QUIC) one.
func TestPeer_ListenAddressInUseFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, addr := range []string{
		"/ip4/127.0.0.1/tcp/" + portOf(t, ln.Addr().String()),
		"/ip4/127.0.0.1/udp/" + portOf(t, pc.LocalAddr().String()) + "/quic-v1",
	} {
		cfg := testConfig(t)
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", addr}
		n := startNodeOnly(t)
		p, err := New(t.Context(), n, cfg)
		if err == nil {
			p.Close()
			t.Fatalf("%s: New started on an address in use", addr)
		}
		if !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("%s: error %q does not say the address is in use", addr, err)
		}
	}
}

func portOf(t *testing.T, hostport string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
