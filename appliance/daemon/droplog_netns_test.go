package daemon

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonDropLogAndLinkChatter runs the daemon in namespaces with
// log.drops on: a ping from a server without a mapping is logged as a drop
// with its addresses and ICMPv6 type, and the kernel's own MLD and DAD on
// the tun count as link chatter, not as 6to4 drops.
func TestDaemonDropLogAndLinkChatter(t *testing.T) {
	tp := newTopo(t)
	cfg := tp.config(t, "map646.hcl", nil)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("log {\n  drops            = true\n  drops_per_second = 5\n}\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	d := tp.startDaemon(t, cfg)
	// 2001:db8:6::11 has no mapping: its echo requests are src_unmapped.
	ping(t, tp.srv, "-6", "-c", "2", "-i", "0.2", "-W", "1", "-I", "2001:db8:6::11", "2001:db8:64::c000:202")
	// A new address on the tun makes the kernel send MLD and DAD on it.
	tp.x.MustRun(t, "ip", "addr", "add", "2001:db8:ffff:1::1/64", "dev", "dmtun")
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := QueryStats(d.sock)
		if err != nil {
			t.Fatal(err)
		}
		var chatter, illegal uint64
		for _, c := range st.Link {
			if c.Kind == "link_chatter" {
				chatter = c.Value
			}
		}
		for _, c := range st.Drops {
			if c.Dir == "6to4" && (c.Kind == "src_illegal" || c.Kind == "dst_illegal") {
				illegal += c.Value
			}
		}
		if illegal != 0 {
			t.Fatalf("6to4 src/dst_illegal %d: the kernel's link chatter counted as drops", illegal)
		}
		if chatter >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("link_chatter %d after an address was added to the tun", chatter)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
	// The output is read once the daemon has exited (it writes it
	// concurrently until then).
	var line string
	for l := range strings.SplitSeq(d.out.String(), "\n") {
		if strings.Contains(l, `msg="packet dropped"`) {
			line = l
			break
		}
	}
	for _, w := range []string{"dir=6to4", "reason=src_unmapped", "src=2001:db8:6::11",
		"dst=2001:db8:64::c000:202", "proto=icmpv6", "icmp_type=128"} {
		if !strings.Contains(line, w) {
			t.Errorf("drop log line %q lacks %s:\n%s", line, w, d.out)
		}
	}
}
