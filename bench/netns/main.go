// Command netns is the benchmark harness of issues 3 and 12: in one run on
// one machine it compares native kernel IPv6 and IPv4 forwarding, Debian's
// TAYGA 0.9.2, the multi-queue TAYGA fork (-tayga-fork PATH) and map646 in
// each of its link modes (host mode on its tun, with 1 and with 1M
// mappings; NIC mode on AF_PACKET; an inherited fd) between network
// namespaces joined by veth pairs, with GRO on and off on the veths, using
// iperf3 (TCP 1 and 4 streams, 64-byte UDP packet rate), ping (100/s and 1/s
// on the idle path, 100/s during the UDP flood) and the translator's CPU
// time.
//
// map646 setups are rendered from HCL templates (templates/, or -template
// MODE=FILE); a link mode that `map646 check` rejects is reported as
// unsupported, not as a failure. Within each round and condition (GRO on,
// then GRO off) each test runs for every setup before the next test
// (-interleave test: a compared pair is measured back to back), the setups
// in reverse order every other round (A B, B A, ...), each measurement in
// namespaces built anew, so that nothing one setup leaves in the kernel (a
// policy rule: the namespace's fib_has_custom_rules stays set) reaches the
// next; the report gives medians and same-run ratios, judges the issues' targets (met / not met, never enforced),
// prints a Markdown section and can write it into docs/benchmarks.md
// between its markers. The exit status is non-zero when a measurement fails
// (a tool errors, no traffic passes), never because a target is missed.
//
//	go run ./bench/netns -map646 bin/map646 -tayga-fork /tmp/tayga-fork/tayga -out docs/benchmarks.md
//	go run ./bench/netns -quick -map646 bin/map646                    # smoke test
//
// It needs root, /dev/net/tun, iproute2, iperf3, ping, ethtool and tayga.
// All traffic stays inside namespaces named bn-PID-{cli,rtr,srv}, which are
// removed on exit, and uses documentation addresses only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the harness's parameters.
type options struct {
	Rounds   int
	Duration time.Duration
	Pings    int
	Mappings int      // size of the large map646 table
	Pings1s  int      // pings at 1/s per setup and round (sparse traffic)
	Setups   []string // keys, in the order they run in each round
	Map646   string   // binary
	Tayga    string   // binary of TAYGA 0.9.2
	// TaygaFork is the apalrd/tayga binary ("": not measured).
	TaygaFork string
	// TunEcho is the bench/tunecho binary of the tun-echo setup; "":
	// the harness builds it when that setup runs.
	TunEcho string
	// PktEcho is the bench/pktecho binary of the pkt-echo setups, which
	// the harness builds when one of them runs.
	PktEcho string
	// Templates replaces the embedded HCL template of a link mode
	// (mode -> file).
	Templates map[string]string
	Out       string // Markdown file to update; "" prints only
	JSON      string // per-round raw values; "" for none
	Keep      bool   // keep the work directory (configs, logs)
	Perf      string // with perf(1): profile each translator in round 1 into this directory
	// PerfSystem profiles every CPU (perf record -a) instead of the
	// translator's threads, native forwarding included: on a shared
	// machine the kernel's forwarding, the veths and iperf3 run on the
	// same CPUs and a per-process profile hides them.
	PerfSystem bool
	// Conds are the veth states every setup is measured in, in order.
	Conds []condition
	// Tests are the measurements each setup runs (-tests); empty: all.
	Tests testSet
	// StartTimeout bounds a map646 start (loading a large table, installing
	// routes) until traffic passes; 0 means 90 s.
	StartTimeout time.Duration
	Log          func(format string, a ...any)
	// beforeSetup, if set, runs after the namespaces were built for a
	// setup's measurement and before its translator starts (a test's seam).
	beforeSetup func(topology, unit) error
	// Interleave orders a round's measurements (-interleave):
	// interleaveTest (also for "") or interleaveSetup.
	Interleave string
	// KernelFlows leaves the client ports and ping identifiers to the
	// kernel and ping (-kernel-flows) instead of drawing them per round
	// for every setup alike (flowIDs).
	KernelFlows bool
}

func main() {
	var o options
	quick := flag.Bool("quick", false, "smoke test: 1 round of 3 s tests, 50 pings at 100/s and 2 at 1/s, GRO on only unless -gro is given (overrides -rounds, -duration, -pings, -pings-1s)")
	flag.IntVar(&o.Rounds, "rounds", 5, "rounds; each runs every setup once in every GRO condition")
	flag.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each iperf3 test (whole seconds)")
	flag.IntVar(&o.Pings, "pings", 200, "pings per setup and round, 10 ms apart (100/s)")
	flag.IntVar(&o.Pings1s, "pings-1s", 10, "pings per setup and round, 1 s apart (sparse traffic)")
	flag.IntVar(&o.Mappings, "mappings", 1_000_000, "mappings in the large map646 table")
	setups := flag.String("setups", "", "setups to compare, in run order (default: "+strings.Join(defaultSetups("PATH"), ",")+"; tayga-fork only with -tayga-fork)")
	flag.StringVar(&o.Map646, "map646", "bin/map646", "map646 binary (make build)")
	flag.StringVar(&o.Tayga, "tayga", "/usr/sbin/tayga", "TAYGA 0.9.2 binary")
	flag.StringVar(&o.TaygaFork, "tayga-fork", "", "binary of the apalrd/tayga fork, run with `workers 2`; empty: not measured")
	flag.StringVar(&o.TunEcho, "tun-echo", "", "bench/tunecho binary for the tun-echo setup (not in the default setups); empty: built with go build from this repository")
	tmpl := flag.String("template", "", "replace a link mode's HCL template: MODE=FILE[,MODE=FILE] with MODE tun, nic or fd (text/template; see bench/netns/templates)")
	flag.StringVar(&o.Out, "out", "", "Markdown file whose netns-harness section is replaced (e.g. docs/benchmarks.md)")
	flag.StringVar(&o.JSON, "json", "", "write every per-round value to this JSON file")
	tests := flag.String("tests", "", "measurements to run, comma-separated, from "+strings.Join(allTests, ",")+" (udp includes the pings during the flood); default: all. An A/B of one measurement runs in a fraction of the time")
	gro := flag.String("gro", "both", "veth conditions, comma-separated, measured in this order: on (GRO, as NIC drivers do by default), off (the veth default), both (on,off), udp (GRO and rx-udp-gro-forwarding: forwarded UDP floods merge into USO super-packets), list (GRO and rx-gro-list: forwarded packets are chained, not merged), napi (udp with threaded NAPI on the veths: a poll finds more packets to merge)")
	flag.BoolVar(&o.Keep, "keep", false, "keep the work directory with configurations and translator logs")
	flag.StringVar(&o.Perf, "perf", "", "profile each translator with perf record during round 1's TCP 1 stream and UDP tests; data and reports go to this directory (use an unstripped map646 for Go symbols)")
	flag.StringVar(&o.Interleave, "interleave", interleaveTest, "order of a round's measurements: "+interleaveTest+" (each test runs for every setup before the next test, each setup's translator started for that test alone: a compared pair is measured back to back) or "+interleaveSetup+" (every test of a setup before the next setup, one translator start per setup); either way the setups' order is reversed every other round")
	flag.BoolVar(&o.KernelFlows, "kernel-flows", false, "let the kernel pick iperf3's client ports and ping its identifiers, each setup its own, instead of giving every setup of a round the same ones (drawn at random per round)")
	flag.BoolVar(&o.PerfSystem, "perf-system", false, "with -perf: sample every CPU (perf record -a), native forwarding included, instead of the translator's threads")
	merge := flag.String("merge", "", "render the report from these -json files of runs of the same setups (comma-separated), their rounds pooled, instead of measuring: a long A/B split into runs short enough to hold a shared lock")
	flag.Parse()
	if *merge != "" {
		paths := strings.Split(*merge, ",")
		info, r, err := mergeRuns(paths)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Print(mergedNote(paths, r.Rounds) + renderMarkdown(info, r))
		return
	}
	groSet := false
	flag.Visit(func(f *flag.Flag) { groSet = groSet || f.Name == "gro" })
	if *quick {
		o.Rounds, o.Duration, o.Pings, o.Pings1s = 1, 3*time.Second, 50, 2
		if !groSet {
			*gro = "on"
		}
	}
	var err error
	if o.Conds, err = parseGRO(*gro); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if o.Tests, err = parseTests(*tests); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if o.Templates, err = parseTemplateFlags(*tmpl); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	o.Setups = defaultSetups(o.TaygaFork)
	if *setups != "" {
		o.Setups = strings.Split(*setups, ",")
	}
	o.Log = func(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	md, err := harness(ctx, o)
	stop()
	if md != "" {
		fmt.Print(md)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// The measurements -tests selects.
const (
	testPing   = "ping"   // 100/s on an idle path
	testPing1s = "ping1s" // 1/s
	testTCP1   = "tcp1"
	testTCP4   = "tcp4"
	testUDP    = "udp" // 64 B flood, with pings during it
)

var allTests = []string{testPing, testPing1s, testTCP1, testTCP4, testUDP}

// testSet is the set of measurements to run; nil runs them all.
type testSet map[string]bool

func (t testSet) has(name string) bool { return t == nil || t[name] }

// parseTests turns -tests into a set; "" is every measurement.
func parseTests(v string) (testSet, error) {
	if v == "" {
		return nil, nil
	}
	t := testSet{}
	for _, name := range strings.Split(v, ",") {
		if !contains(allTests, name) {
			return nil, fmt.Errorf("-tests: unknown measurement %q (want a comma-separated list of %s)", name, strings.Join(allTests, ", "))
		}
		t[name] = true
	}
	return t, nil
}

// parseGRO turns -gro, a comma-separated list, into the conditions to
// measure, in the order given.
func parseGRO(v string) ([]condition, error) {
	var cs []condition
	add := func(more ...condition) {
		for _, c := range more {
			if !slices.Contains(cs, c) {
				cs = append(cs, c)
			}
		}
	}
	for _, w := range strings.Split(v, ",") {
		switch strings.TrimSpace(w) {
		case "on", "true":
			add(condGRO)
		case "off", "false":
			add(condNoGRO)
		case "both":
			add(condGRO, condNoGRO)
		case "udp":
			add(condUDPGRO)
		case "list":
			add(condGROList)
		case "napi":
			add(condNAPI)
		default:
			return nil, fmt.Errorf("-gro %q: want a comma-separated list of on, off, both, udp, list or napi", v)
		}
	}
	return cs, nil
}

// checkPrerequisites names whatever the harness cannot run without.
func checkPrerequisites(o options) error {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "root (network namespaces)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil && (contains(o.Setups, sTayga) || contains(o.Setups, sTaygaFork) || contains(o.Setups, sTunEcho) || contains(o.Setups, sTunEchoURing) || usesMap646(o.Setups)) {
		miss = append(miss, "/dev/net/tun")
	}
	tools := []string{"ip", "iperf3", "ping", "ethtool", "sysctl", "ss", "nstat"}
	if o.Perf != "" {
		tools = append(tools, "perf")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			miss = append(miss, tool)
		}
	}
	if contains(o.Setups, sTayga) {
		if _, err := exec.LookPath(o.Tayga); err != nil {
			miss = append(miss, "tayga ("+o.Tayga+")")
		}
	}
	if contains(o.Setups, sTaygaFork) {
		if st, err := os.Stat(o.TaygaFork); o.TaygaFork == "" || err != nil || st.IsDir() {
			miss = append(miss, "TAYGA fork binary ("+o.TaygaFork+", -tayga-fork)")
		}
	}
	if (contains(o.Setups, sTunEcho) || contains(o.Setups, sTunEchoURing)) && o.TunEcho != "" {
		if st, err := os.Stat(o.TunEcho); err != nil || st.IsDir() {
			miss = append(miss, "tun echo binary ("+o.TunEcho+", -tun-echo)")
		}
	}
	if usesMap646(o.Setups) {
		if st, err := os.Stat(o.Map646); err != nil || st.IsDir() {
			miss = append(miss, "map646 binary "+o.Map646+" (make build)")
		}
	}
	if len(miss) > 0 {
		return fmt.Errorf("missing: %s", strings.Join(miss, ", "))
	}
	return nil
}

// usesMap646 reports whether any setup runs map646.
func usesMap646(setups []string) bool {
	for _, s := range setups {
		if strings.HasPrefix(s, sMap646) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// countLabel writes 1000000 as "1M" and 1000 as "1k".
func countLabel(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// harness runs the whole benchmark and returns the Markdown section. It
// always removes its namespaces and stops its processes (by PID), also when
// a measurement fails or ctx is cancelled.
func harness(ctx context.Context, o options) (string, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Rounds < 1 || o.Duration < time.Second || o.Pings < 1 || o.Pings1s < 1 {
		return "", errors.New("need -rounds >= 1, -duration >= 1s, -pings >= 1, -pings-1s >= 1")
	}
	if len(o.Conds) == 0 {
		o.Conds = []condition{condGRO}
	}
	if err := checkPrerequisites(o); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "bn-bench-")
	if err != nil {
		return "", err
	}
	if o.Keep {
		o.Log("work directory %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.Map646 != "" {
		if abs, err := filepath.Abs(o.Map646); err == nil {
			o.Map646 = abs
		}
	}
	if o.Perf != "" {
		if err := os.MkdirAll(o.Perf, 0o755); err != nil {
			return "", err
		}
	}
	if (contains(o.Setups, sTunEcho) || contains(o.Setups, sTunEchoURing)) && o.TunEcho == "" {
		if o.TunEcho, err = buildTunEcho(ctx, dir); err != nil {
			return "", err
		}
	}
	if contains(o.Setups, sPktEcho) || contains(o.Setups, sPktEchoTx) {
		if o.PktEcho, err = buildPktEcho(ctx, dir); err != nil {
			return "", err
		}
	}
	setups, err := buildSetups(o, dir)
	if err != nil {
		return "", err
	}
	unsupported := map[string]string{}
	if usesMap646(o.Setups) {
		setups, unsupported, err = checkSupport(ctx, setups, o.Map646, dir, o.Templates)
		if err != nil {
			return "", err
		}
		for k, why := range unsupported {
			o.Log("%s: unsupported by %s: %s", k, o.Map646, why)
		}
	}

	removeStale(ctx)
	topo := newTopology(os.Getpid())
	var iperfSrv *process
	defer func() {
		// A fresh context: ctx may be the cancelled one that got us here.
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, s := range setups {
			if s.xlat != nil {
				_ = s.xlat.stop(c, topo)
			}
		}
		if iperfSrv != nil {
			_ = iperfSrv.stop(3 * time.Second)
		}
		topo.down(c)
	}()
	info := runInfo{Date: time.Now(), Conds: o.Conds, Rounds: o.Rounds, Duration: o.Duration, Pings: o.Pings, Pings1s: o.Pings1s, Mappings: o.Mappings,
		Setups: setups, Unsupported: unsupported, Translated: map[string]bool{}, Offloads: map[string]map[string]string{}, Tuns: map[string]string{}}
	fillMachineInfo(ctx, &info, o)
	var cols []string
	for _, c := range o.Conds {
		for _, s := range setups {
			cols = append(cols, col(c.Key, s.Key))
			info.Translated[col(c.Key, s.Key)] = s.xlat != nil
		}
	}

	// fresh builds the three namespaces anew, in condition c, for the next
	// setup, with iperf3's server in the new server namespace. Every setup
	// starts from the same kernel state, whichever ran before it: the kernel
	// never clears a namespace's fib_has_custom_rules once a policy rule was
	// added (map646 adds its own), so native forwarding measured in a router
	// namespace that a map646 setup had used walked the policy rules too,
	// and so did TAYGA; conntrack, neighbour and route caches, sysctls a
	// translator changed (NIC mode turns forwarding off) and a tun left
	// behind go the same way.
	fresh := func(c condition) error {
		if iperfSrv != nil {
			_ = iperfSrv.stop(3 * time.Second)
			iperfSrv = nil
		}
		if err := topo.up(ctx, c); err != nil {
			return fmt.Errorf("topology: %w", err)
		}
		srv, err := startIn(topo.Server, filepath.Join(dir, "iperf3-server.log"), "iperf3", "-s")
		if err != nil {
			return err
		}
		iperfSrv = srv
		return waitListening(ctx, topo.Server, iperfSrv, 5201, 10*time.Second)
	}

	res := newResults(cols, o.Rounds)
	m := measurer{topo: topo, duration: o.Duration, pings: o.Pings, pings1s: o.Pings1s}
	if o.Interleave == "" {
		o.Interleave = interleaveTest
	}
	units, err := schedule(o.Rounds, o.Conds, len(setups), o.Tests, o.Interleave)
	if err != nil {
		return "", err
	}
	info.Interleave = o.Interleave
	flows := make([]flowIDs, o.Rounds)
	if !o.KernelFlows {
		flows = newFlowIDs(o.Rounds, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid()))))
	}
	info.Flows = flows
	var failures []string
	offloadsSeen := map[string]bool{}
	for _, u := range units {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		c, s := u.Cond, setups[u.Setup]
		if err := fresh(c); err != nil {
			return "", err
		}
		if !offloadsSeen[c.Key] {
			offloadsSeen[c.Key] = true
			for _, p := range topo.veths() {
				f, err := offloads(ctx, p[0], p[1])
				if err != nil {
					return "", err
				}
				info.Offloads[c.Label+": "+roleOf(topo, p[0])+"/"+p[1]] = f
			}
		}
		if o.beforeSetup != nil {
			if err := o.beforeSetup(topo, u); err != nil {
				return "", err
			}
		}
		tests := strings.Join(u.names(), ",")
		o.Log("round %d/%d, %s: %s: %s", u.Round+1, o.Rounds, c.Label, s.Label, tests)
		m.tests, m.flows = u.Tests, flows[u.Round]
		if err := measureSetup(ctx, m, s, c, u.Round, res, &info, perfOptions{Dir: o.Perf, System: o.PerfSystem}); err != nil {
			o.Log("round %d, %s: %s: %s: %v", u.Round+1, c.Label, s.Label, tests, err)
			failures = append(failures, fmt.Sprintf("round %d, %s, %s, %s: %v", u.Round+1, c.Label, s.Label, tests, err))
		}
	}
	if o.JSON != "" {
		if err := writeJSON(o.JSON, info, res); err != nil {
			return "", err
		}
	}
	md := renderMarkdown(info, res)
	if miss := res.missing(info.Translated, o.Tests); len(miss) > 0 || len(failures) > 0 {
		msg := "measurements failed:\n  " + strings.Join(failures, "\n  ")
		if len(miss) > 0 {
			msg += fmt.Sprintf("\n  no number for: %s", strings.Join(miss, ", "))
		}
		return md, errors.New(msg)
	}
	if o.Out != "" {
		if err := writeSection(o.Out, md); err != nil {
			return md, err
		}
		o.Log("wrote %s", o.Out)
	}
	return md, nil
}

// measureSetup starts the setup's translator, runs every test once in
// condition c and stops the translator again. The first error ends this
// setup's round.
func measureSetup(ctx context.Context, m measurer, s setup, c condition, round int, res *results, info *runInfo, perf perfOptions) (err error) {
	key := col(c.Key, s.Key)
	var p *process
	if s.xlat != nil {
		began := time.Now()
		p, err = s.xlat.start(ctx, m.topo)
		defer func() {
			if serr := s.xlat.stop(context.WithoutCancel(ctx), m.topo); serr != nil && err == nil {
				err = serr
			}
		}()
		if err != nil {
			return err
		}
		// With -interleave test a setup starts once per test and round: the
		// first start of the round is the one recorded, as it was the only
		// one before.
		if math.IsNaN(res.Values[key][mStart][round]) {
			res.set(key, mStart, round, time.Since(began).Seconds())
		}
		if tun := s.xlat.tunName(); tun != "" {
			k := s.Key + "/" + tun
			if _, ok := info.Offloads[k]; !ok {
				if f, oerr := offloads(ctx, m.topo.Router, tun); oerr == nil {
					info.Offloads[k] = f
				}
				info.Tuns[k] = tunQueues(ctx, m.topo.Router, tun)
			}
		}
	}
	// Ping first, on an idle path: after the UDP flood a slow translator's
	// tun queue still holds a backlog that would end up in the RTTs.
	if m.tests.has(testPing) {
		pr, err := m.ping(ctx, s.Dst, m.pings, fastInterval, pingIdle)
		if err != nil {
			return fmt.Errorf("ping 100/s: %w", err)
		}
		res.set(key, mRTT50, round, pr.Median*1000)
		res.set(key, mRTT99, round, pr.P99*1000)
		res.setRTTs(key, mRTT50, round, pr.RTTs)
	}
	if m.tests.has(testPing1s) {
		pr, err := m.ping(ctx, s.Dst, m.pings1s, time.Second, pingSparse)
		if err != nil {
			return fmt.Errorf("ping 1/s: %w", err)
		}
		res.set(key, mRTTSlow, round, pr.Median*1000)
		res.setRTTs(key, mRTTSlow, round, pr.RTTs)
	}
	// profiled wraps a test in a perf recording (round 1 with -perf only)
	// of the translator (first condition) or of every CPU (every
	// condition, native forwarding included).
	profiled := func(pkey, test string, f func() error, units func() (float64, string)) error {
		if perf.Dir == "" || round != 0 {
			return f()
		}
		name, pid := s.Key+"-"+pkey, 0
		if perf.System {
			name = c.Key + "-" + name
		} else {
			if p == nil || c != info.Conds[0] {
				return f()
			}
			pid = p.PID()
		}
		rec, err := startPerf(perf.Dir, name, pid)
		if err != nil {
			return err
		}
		ferr := f()
		prof, err := rec.stop(ctx)
		if ferr != nil {
			return ferr
		}
		if err != nil {
			return err
		}
		prof.Name = s.Label + ", " + test
		if perf.System {
			prof.Name = c.Label + ", " + prof.Name + " (every CPU)"
			prof.Units, prof.Unit = units()
		}
		info.Profiles = append(info.Profiles, prof)
		return nil
	}
	for _, streams := range []int{1, 4} {
		if (streams == 1 && !m.tests.has(testTCP1)) || (streams == 4 && !m.tests.has(testTCP4)) {
			continue
		}
		cpu, err := startCPU(p)
		if err != nil {
			return err
		}
		var r tcpResult
		test := func() (err error) { r, err = m.tcp(ctx, s.Dst, streams); return err }
		if streams == 1 {
			err = profiled(mTCP1, "TCP 1 stream", test, func() (float64, string) { return r.Bits / 8 / 65536, "64 KiB" })
		} else {
			err = test()
		}
		if err != nil {
			return fmt.Errorf("TCP %d stream(s): %w", streams, err)
		}
		secs, err := cpu.seconds()
		if err != nil {
			return err
		}
		tput, cpuKey := mTCP1, mCPUTCP1
		if streams == 4 {
			tput, cpuKey = mTCP4, mCPUTCP4
		}
		res.set(key, tput, round, r.BitsPerSecond/1e9)
		res.setPort(key, tput, round, r.Port)
		res.set(key, cpuKey, round, perUnit(secs, r.Bits/1e9))
	}
	if !m.tests.has(testUDP) {
		if p != nil && p.exited() {
			return fmt.Errorf("%s died during the tests: %v%s", p.name, p.err, p.logTail())
		}
		return nil
	}
	cpu, err := startCPU(p)
	if err != nil {
		return err
	}
	var u udpResult
	var lp pingResult
	before, err := m.serverUDP(ctx)
	if err != nil {
		return err
	}
	err = profiled(mUDP, "UDP 64 B", func() (err error) {
		u, lp, err = m.udp64WithPing(ctx, s.Dst)
		return err
	}, func() (float64, string) { return u.Packets, "packet" })
	if err != nil {
		return fmt.Errorf("UDP 64 B: %w", err)
	}
	after, err := m.serverUDP(ctx)
	if err != nil {
		return err
	}
	secs, err := cpu.seconds()
	if err != nil {
		return err
	}
	res.set(key, mUDP, round, u.PacketsPerSecond/1e3)
	res.set(key, mUDPDrop, round, after.sub(before).dropPercent())
	res.set(key, mUDPReached, round, after.sub(before).reachedRate(u.PacketsPerSecond)/1e3)
	res.setPort(key, mUDP, round, u.Port)
	res.set(key, mCPUUDP, round, perUnit(secs, u.Packets/1e6))
	res.set(key, mRTTLoad, round, lp.Median*1000) // NaN when every echo was lost
	res.set(key, mLossLoad, round, lp.lossPercent())
	if p != nil && p.exited() {
		return fmt.Errorf("%s died during the tests: %v%s", p.name, p.err, p.logTail())
	}
	return nil
}

// perUnit divides CPU seconds by the amount of work; NaN stays NaN (no
// translator process).
func perUnit(cpuSeconds, units float64) float64 {
	if math.IsNaN(cpuSeconds) || units <= 0 {
		return math.NaN()
	}
	return cpuSeconds / units
}

func roleOf(t topology, ns string) string {
	switch ns {
	case t.Client:
		return "client"
	case t.Router:
		return "router"
	case t.Server:
		return "server"
	}
	return ns
}

// waitListening waits until a TCP port listens inside ns.
func waitListening(ctx context.Context, ns string, p *process, port int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		out, err := runIn(ctx, ns, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		if err == nil && strings.TrimSpace(out) != "" {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %v%s", p.name, p.err, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d in %s after %v", port, ns, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fillMachineInfo records the kernel, CPU and tool versions (best effort).
func fillMachineInfo(ctx context.Context, info *runInfo, o options) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		info.Kernel = utsString(u.Release[:])
	}
	info.CPUModel, info.Cores = cpuInfo()
	if info.Cores == 0 {
		info.Cores = runtime.NumCPU()
	}
	if out, err := run(ctx, "iperf3", "--version"); err == nil {
		info.Iperf = strings.Fields(out + " ")[0]
		if f := strings.Fields(out); len(f) > 1 {
			info.Iperf = f[0] + " " + f[1]
		}
	}
	if usesMap646(o.Setups) {
		if out, err := run(ctx, o.Map646, "version"); err == nil {
			v := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
			info.Map646 = strings.TrimSpace(strings.TrimPrefix(v, "map646"))
		}
	}
	if out, err := run(ctx, "git", "describe", "--always", "--dirty"); err == nil {
		info.Commit = strings.TrimSpace(out)
	}
}

func utsString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// cpuInfo returns the first "model name" and the number of processors in
// /proc/cpuinfo.
func cpuInfo() (model string, cores int) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU", 0
	}
	return parseCPUInfo(string(b))
}

func parseCPUInfo(s string) (model string, cores int) {
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			cores++
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		}
	}
	if model == "" {
		model = "unknown CPU"
	}
	return model, cores
}
