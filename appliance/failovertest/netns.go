// Package failovertest holds the failover experiment (two translators
// behind a BGP router, an IPv6-only server that learns its way back from
// router advertisements) and the network namespace helpers that it and the
// BGP and RA tests share.
package failovertest

import (
	"testing"

	"github.com/map646/map646/internal/netnstest"
)

// RequireNetns skips the test unless it may create network namespaces.
func RequireNetns(t testing.TB) {
	t.Helper()
	netnstest.Require(t, "fo-")
}

// Netns is a network namespace created for a test and deleted after it;
// Run, Output, Command and Sysctl come from netnstest.NS.
type Netns struct {
	*netnstest.NS
	t testing.TB
}

// NewNetns creates the namespace fo-<name>-<pid>-<n>.
func NewNetns(t testing.TB, name string) *Netns {
	t.Helper()
	return &Netns{NS: netnstest.New(t, "fo-"+name+"-"), t: t}
}

// Do runs f on an OS thread that has entered the namespace, so that sockets
// f opens belong to it; goroutines f starts keep using those sockets after
// Do returns. It fails the test if the thread cannot enter or leave.
func (n *Netns) Do(f func()) {
	n.t.Helper()
	if err := n.NS.Do(func() error { f(); return nil }); err != nil {
		n.t.Fatal(err)
	}
}

// Veth connects namespace a (interface ifa) and b (interface ifb).
func Veth(t testing.TB, a *Netns, ifa string, b *Netns, ifb string) {
	t.Helper()
	netnstest.Veth(t, a.NS, ifa, b.NS, ifb)
}
