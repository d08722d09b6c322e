package main

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestNewFlowIDs: each round's ports stay inside the kernel's ephemeral
// range with room for the round's six ports, identifiers inside 1-65535
// with room for three, and the rounds draw different ones.
func TestNewFlowIDs(t *testing.T) {
	fs := newFlowIDs(1000, rand.New(rand.NewPCG(1, 2)))
	ports, ids := map[int]bool{}, map[int]bool{}
	for i, f := range fs {
		if f.Port < 32768 || f.Port+flowPorts-1 > 60999 {
			t.Errorf("round %d: ports %d-%d outside 32768-60999", i, f.Port, f.Port+flowPorts-1)
		}
		if f.PingID < 1 || f.PingID+flowPingIDs-1 > 65535 {
			t.Errorf("round %d: identifiers %d-%d outside 1-65535", i, f.PingID, f.PingID+flowPingIDs-1)
		}
		ports[f.Port], ids[f.PingID] = true, true
	}
	// 1000 draws from ~28000 ports or ~65000 identifiers: a handful repeat.
	if len(ports) < 950 || len(ids) < 950 {
		t.Errorf("%d distinct ports, %d distinct identifiers in 1000 rounds", len(ports), len(ids))
	}
}

// TestFlowArgs: the round's flows become iperf3's --cport and ping's -e,
// one port range and identifier per test; zero values pass neither.
func TestFlowArgs(t *testing.T) {
	f := flowIDs{Port: 40000, PingID: 700}
	for _, tc := range []struct {
		got, want []string
	}{
		{f.iperfPort(portTCP1), []string{"--cport", "40000"}},
		{f.iperfPort(portTCP4), []string{"--cport", "40001"}}, // streams on 40001-40004
		{f.iperfPort(portUDP), []string{"--cport", "40005"}},
		{f.pingID(pingIdle), []string{"-e", "700"}},
		{f.pingID(pingSparse), []string{"-e", "701"}},
		{f.pingID(pingUDP), []string{"-e", "702"}},
		{flowIDs{}.iperfPort(portUDP), nil},
		{flowIDs{}.pingID(pingIdle), nil},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if portTCP4+4 > portUDP || portUDP >= flowPorts || pingUDP >= flowPingIDs {
		t.Errorf("the tests' ports or identifiers overlap or exceed the round's")
	}
}
