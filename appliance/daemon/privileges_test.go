package daemon

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/config"
)

func TestResolveIdentity(t *testing.T) {
	for _, tc := range []struct {
		in      config.RunAs
		want    identity
		wantErr string
	}{
		{config.RunAs{}, identity{}, ""},
		{config.RunAs{User: "root"}, identity{set: true, uid: 0, gid: 0, name: "root"}, ""},
		{config.RunAs{User: "nobody"}, identity{set: true, uid: 65534, gid: 65534, name: "nobody"}, ""},
		{config.RunAs{User: "65534", Group: "nogroup"}, identity{set: true, uid: 65534, gid: 65534, name: "nobody"}, ""},
		{config.RunAs{User: "nobody", Group: "0"}, identity{set: true, uid: 65534, gid: 0, name: "nobody"}, ""},
		{config.RunAs{User: "fo-no-such-user"}, identity{}, "fo-no-such-user"},
		{config.RunAs{User: "nobody", Group: "fo-no-such-group"}, identity{}, "fo-no-such-group"},
		{config.RunAs{Group: "nogroup"}, identity{}, "needs a user"},
	} {
		got, err := resolveIdentity(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: err %v, want one naming %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestNeededCaps(t *testing.T) {
	parse := func(extra string) *config.Config {
		c, err := config.Parse([]byte(`
translator {
  prefix = "2001:db8:64::/96"
}
`+extra), "caps.hcl")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	bgp := func(port int) string {
		s := "bgp {\n  local_as = 64512\n  router_id = \"203.0.113.1\"\n  neighbor \"203.0.113.14\" { remote_as = 64500 }\n"
		if port != 0 {
			s += "  listen_port = " + strconv.Itoa(port) + "\n"
		}
		return s + "}\n"
	}
	for _, tc := range []struct {
		name, extra string
		want        []uintptr
	}{
		{"translator only", "", []uintptr{unix.CAP_NET_ADMIN}},
		{"bgp dialling only", bgp(0), []uintptr{unix.CAP_NET_ADMIN}},
		{"bgp on 179", bgp(179), []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_BIND_SERVICE}},
		{"bgp on 1179", bgp(1179), []uintptr{unix.CAP_NET_ADMIN}},
		{"router advertisements", "router_advertisement \"eth1\" {}\n", []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW}},
	} {
		if got := neededCaps(parse(tc.extra)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestKeptCaps: CAP_NET_BIND_SERVICE and CAP_NET_RAW are kept whenever the
// process holds them, so that a reload can add the announcers that need
// them; never more than those three, and never one it does not hold that
// the file does not need.
func TestKeptCaps(t *testing.T) {
	cfg, err := config.Parse([]byte("translator {\n  prefix = \"2001:db8:64::/96\"\n}\n"), "caps.hcl")
	if err != nil {
		t.Fatal(err)
	}
	withRA, err := config.Parse([]byte("translator {\n  prefix = \"2001:db8:64::/96\"\n}\nrouter_advertisement \"eth1\" {}\n"), "caps.hcl")
	if err != nil {
		t.Fatal(err)
	}
	holds := func(cs ...uintptr) func(uintptr) bool { return func(c uintptr) bool { return slices.Contains(cs, c) } }
	all := func(uintptr) bool { return true }
	for _, tc := range []struct {
		name string
		cfg  *config.Config
		held func(uintptr) bool
		want []uintptr
	}{
		{"holds nothing more", cfg, nil, []uintptr{unix.CAP_NET_ADMIN}},
		{"holds every capability (root)", cfg, all, []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_BIND_SERVICE, unix.CAP_NET_RAW}},
		{"holds CAP_NET_RAW only", cfg, holds(unix.CAP_NET_ADMIN, unix.CAP_NET_RAW), []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW}},
		{"needs CAP_NET_RAW, holds nothing more", withRA, nil, []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW}},
	} {
		if got := keptCaps(tc.cfg, tc.held); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, capNames(got), capNames(tc.want))
		}
	}
}

// TestHeldCap agrees with the kernel's account of this process's
// permitted set (CapPrm in /proc/self/status).
func TestHeldCap(t *testing.T) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var prm uint64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapPrm:"); ok {
			if prm, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_BIND_SERVICE, unix.CAP_NET_RAW, unix.CAP_SYS_ADMIN} {
		if got, want := heldCap(c), prm&(1<<c) != 0; got != want {
			t.Errorf("heldCap(%d) = %v; CapPrm %#x says %v", c, got, prm, want)
		}
	}
}
