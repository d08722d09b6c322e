package demo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/internal/testenv"
)

// TestDemoConfigIsValid: the embedded configuration passes the same
// checks as `map646 check`.
func TestDemoConfigIsValid(t *testing.T) {
	c, err := config.Parse(Config, "demo.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Translator.Mappings) != 1 || c.Translator.Prefix.String() != "2001:db8:64::/96" || c.Translator.Tun.Name != "map646" {
		t.Errorf("demo config: %s", c.Summary())
	}
}

// TestDemoScript runs demo/run.sh as a person would (it builds the binary,
// makes the namespaces, fetches the page) and checks what it shows: the
// page the IPv4 client fetched, and the server's log naming the client
// 2001:db8:64::c000:202. Needs root, iproute2, python3 and curl.
func TestDemoScript(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "the demo needs root (network namespaces, a tun)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.SkipOrFailf(t, "no /dev/net/tun: %v", err)
	}
	for _, tool := range []string{"ip", "python3", "curl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFailf(t, "the demo needs %s (deps.sh installs it)", tool)
		}
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err == nil && strings.Contains(string(out), "demo-") {
		testenv.SkipOrFailf(t, "demo namespaces exist (a demo is running?):\n%s", out)
	}
	script, err := filepath.Abs("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", script)
	b, err := cmd.CombinedOutput()
	s := string(b)
	if err != nil {
		t.Fatalf("demo/run.sh: %v\n%s", err, s)
	}
	for _, want := range []string{
		"<h1>Hello from an IPv6-only server</h1>",
		`2001:db8:64::c000:202 - - [`,
		`"GET / HTTP/1.1" 200`,
		"demo: OK",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q\n%s", want, s)
		}
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "demo-") {
		t.Errorf("namespaces left after the demo:\n%s", out)
	}
}
