package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
)

// unitScript runs the translator as systemd would under the unit: as an
// unprivileged user ($ID, standing in for map646) holding exactly the
// unit's ambient capabilities ($CAPS) in its bounding set, with no new
// privileges, and /run/map646 (RuntimeDirectory=) its own. A private mount
// namespace gives it that directory and, where /dev/net/tun is not mode
// 0666 as udev makes it on a Debian host, a copy of the node that is.
// Then it asks for stats and a reload as that user, prints the running
// daemon's credentials and routes, stops it, and prints what is left.
const unitScript = `set -e
mkdir -p /run/map646
mount -t tmpfs -o mode=0755,uid=$ID,gid=$ID tmpfs /run/map646
if [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
	mknod "$DIR/tun" c 10 200 && chmod 666 "$DIR/tun" && mount --bind "$DIR/tun" /dev/net/tun
fi
setpriv --reuid=$ID --regid=$ID --clear-groups --inh-caps=$CAPS --ambient-caps=$CAPS --bounding-set=-all,$CAPS --no-new-privs \
	"$BIN" run -c "$DIR/map646.hcl" >"$DIR/log" 2>&1 &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true' EXIT
as() { setpriv --reuid=$ID --regid=$ID --clear-groups "$@"; }
i=0
until grep -q 'msg=ready' "$DIR/log"; do
	i=$((i+1)); [ $i -lt 300 ] && kill -0 $pid || { echo "not ready"; cat "$DIR/log"; exit 1; }
	sleep 0.1
done
as "$BIN" stats
as "$BIN" reload
grep -E '^(Uid|CapEff):' /proc/$pid/status
echo "table 646: $(ip route show table 646)"
kill -TERM $pid
wait $pid && echo "exit 0" || echo "exit $?"
echo "left: $(ip route show table 646 2>/dev/null) forwarding $(sysctl -n net.ipv4.ip_forward)"
`

// TestUnitCapabilitiesSuffice: the unit's user and capabilities are
// enough for a translator to set up, answer stats and reload, and stop
// leaving nothing; it loads the tun's steering program (CAP_BPF, dropped
// afterwards) and keeps CAP_NET_ADMIN, CAP_NET_RAW and
// CAP_NET_BIND_SERVICE (for a reload that adds router advertisements or a
// low BGP port), nothing else.
func TestUnitCapabilitiesSuffice(t *testing.T) {
	netnstest.RequireTun(t, "pku")
	for _, tool := range []string{"setpriv", "unshare", "mknod"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFailf(t, "%s is missing: %v", tool, err)
		}
	}
	unit, err := os.ReadFile("map646.service")
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	for line := range strings.Lines(string(unit)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "AmbientCapabilities="); ok {
			for _, c := range strings.Fields(v) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // the user reads the binary and the file
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "map646")
	build := exec.Command("go", "build", "-o", bin, "../cmd/map646")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := "translator {\n  prefix = \"2001:db8:64::/96\"\n  ipv4_address = \"192.0.2.1\"\n" +
		"  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n  tun {\n    name = \"pkutun\"\n    queues = 2\n  }\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "map646.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := netnstest.New(t, "pku")
	cmd := ns.Command("unshare", "-m", "--propagation", "private", "sh", "-c", unitScript)
	cmd.Env = append(os.Environ(), "ID=65534", "DIR="+dir, "BIN="+bin, "CAPS="+strings.Join(caps, ","))
	out, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatalf("%v\n%s\ndaemon log:\n%s", err, out, log)
	}
	for _, want := range []string{"data path healthy", "unchanged: 1 mappings", "table 646: 198.51.100.10 dev pkutun",
		"exit 0", "left:  forwarding 0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s\ndaemon log:\n%s", want, out, log)
		}
	}
	if !regexp.MustCompile(`Uid:\s+65534\s+65534\s+65534\s+65534`).Match(out) || !strings.Contains(string(out), "CapEff:\t0000000000003400") {
		// CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE (kept for a
		// reload that adds router advertisements or a low BGP port);
		// CAP_BPF is gone once the steering program is loaded.
		t.Errorf("the running translator is not uid 65534 with CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE alone:\n%s", out)
	}
	if strings.Contains(string(log), "steering") {
		t.Errorf("the steering program was not loaded:\n%s", log)
	}
}
