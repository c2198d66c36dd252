package main

import (
	"io"
	"slices"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/p2p"
)

// TestParseFlags_NetworkFlags: the address and NAT flags reach the
// options, repeatable ones accumulate, the environment sets them, and the
// default listen port is not IPFS's 4001.
func TestParseFlags_NetworkFlags(t *testing.T) {
	o, err := parseFlags([]string{
		"-profile", "wan", "-announce", "/ip4/1.2.3.4/tcp/4101", "-announce", "/ip4/1.2.3.4/udp/4101/quic-v1",
		"-announce-append", "/dns4/x.example/tcp/4101", "-no-announce", "10.0.0.0/8",
		"-dht-mode", "client", "-reachability", "public", "-relay-service=false",
	}, io.Discard, func(k string) string {
		if k == "CRDT_CATALOG_NO_ANNOUNCE" {
			return "192.168.0.0/16"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.profile != "wan" || len(o.announce.vals) != 2 || o.announceApp.vals[0] != "/dns4/x.example/tcp/4101" ||
		!slices.Equal(o.noAnnounce.vals, []string{"10.0.0.0/8"}) || o.dhtMode != "client" || o.reachability != "public" ||
		o.relayService || !o.relayClient {
		t.Fatalf("options %+v", o)
	}
	d, err := parseFlags(nil, io.Discard, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.listen.vals, p2p.DefaultListen()) || p2p.DefaultPort == 4001 || d.profile != p2p.ProfileLAN {
		t.Fatalf("defaults: listen %v, profile %q", d.listen.vals, d.profile)
	}
}
