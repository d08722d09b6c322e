package stack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSysfsQueues: the queues of a tun are counted by the rx-N entries of
// its sysfs queues directory (tx-N and anything else are not queues that
// receive), and a sysfs whose device has another ifindex than this
// namespace's device of that name is another namespace's: refused, not
// counted. "lo" is in every namespace, with its own ifindex.
func TestSysfsQueues(t *testing.T) {
	lo, err := netInterfaceIndex("lo")
	if err != nil {
		t.Fatalf("lo's ifindex: %v", err)
	}
	mk := func(t *testing.T, ifindex string, entries ...string) string {
		root := t.TempDir()
		dir := filepath.Join(root, "class", "net", "lo")
		if err := os.MkdirAll(filepath.Join(dir, "queues"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ifindex"), []byte(ifindex+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.Mkdir(filepath.Join(dir, "queues", e), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	for _, c := range []struct {
		name    string
		ifindex string
		entries []string
		iface   string
		check   bool
		want    int
		err     string
	}{
		{name: "three queues", ifindex: lo, entries: []string{"rx-0", "rx-1", "rx-2", "tx-0", "tx-1", "tx-2"}, iface: "lo", check: true, want: 3},
		{name: "another namespace's sysfs", ifindex: "4242", entries: []string{"rx-0"}, iface: "lo", check: true, err: "another network namespace's"},
		{name: "unchecked", ifindex: "4242", entries: []string{"rx-0", "rx-1", "tx-0"}, iface: "lo", want: 2},
		{name: "no rx queue", ifindex: lo, entries: []string{"tx-0"}, iface: "lo", check: true, err: "no rx queue"},
		{name: "a path for a name", ifindex: lo, iface: "../lo", err: "interface name"},
		{name: "dot dot", ifindex: lo, iface: "..", err: "interface name"},
		{name: "no name", ifindex: lo, iface: "", err: "interface name"},
		{name: "no such device", ifindex: lo, iface: "dp-none0", err: "dp-none0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := sysfsQueues(mk(t, c.ifindex, c.entries...), c.iface, c.check)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("sysfsQueues = %d, %v; want an error saying %q", n, err, c.err)
				}
				return
			}
			if err != nil || n != c.want {
				t.Fatalf("sysfsQueues = %d, %v; want %d", n, err, c.want)
			}
		})
	}
}

// TestCheckAllQueuesSkipsSingleQueues: descriptors that are not queues of
// a multi-queue tun (sockets, a tun with one queue, taps) are not asked
// about: no count, no warning, no error.
func TestCheckAllQueuesSkipsSingleQueues(t *testing.T) {
	var warned []string
	warn := func(msg string, _ ...any) { warned = append(warned, msg) }
	infos := []FDInfo{{}, {Tun: true, Interface: "dp-sq0"}}
	qc, err := checkAllQueues([]int{-1, -1}, infos, warn)
	if err != nil || len(warned) != 0 || len(qc.tuns) != 0 {
		t.Fatalf("checkAllQueues = %+v, %v, warnings %q", qc, err, warned)
	}
	// A multi-queue tun whose queue cannot be asked whether it is
	// attached, nor its queues counted (fd -1: no TUNSETQUEUE, no
	// TUNGETDEVNETNS, and no such interface in /sys) is served with
	// warnings that say what may be lost.
	infos = []FDInfo{{Tun: true, MultiQueue: true, Interface: "dp-gone0"}}
	qc, err = checkAllQueues([]int{-1}, infos, warn)
	if err != nil || len(warned) != 2 || !strings.Contains(warned[0], "receives nothing") || !strings.Contains(warned[1], "lost") || len(qc.tuns) != 0 {
		t.Fatalf("checkAllQueues = %+v, %v, warnings %q", qc, err, warned)
	}
}

func netInterfaceIndex(name string) (string, error) {
	b, err := os.ReadFile("/sys/class/net/" + name + "/ifindex")
	return strings.TrimSpace(string(b)), err
}

// attachedQueues returns how many queues are attached to the tun named
// name behind the queue descriptor fd, counted once (queueCounter).
func attachedQueues(fd int, name string) (int, error) {
	count, release := queueCounter(fd, name)
	defer release()
	return count()
}
