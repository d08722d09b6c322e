package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// perfRecording is a `perf record` of one translator process (all its
// threads, user and kernel stacks) or of every CPU during one test. perf
// attaches by PID, so it runs in the root namespace.
type perfRecording struct {
	name, data string
	system     bool // every CPU
	cmd        *exec.Cmd
	done       chan error
}

// perfOptions say what -perf records: nothing without a Dir, the
// translator's threads, or with System every CPU.
type perfOptions struct {
	Dir    string
	System bool
}

// startPerf starts sampling pid (every CPU when pid is 0) at 999 Hz into
// dir/name.data.
func startPerf(dir, name string, pid int) (*perfRecording, error) {
	data := filepath.Join(dir, name+".data")
	target := []string{"-a"}
	if pid > 0 {
		target = []string{"-p", strconv.Itoa(pid)}
	}
	cmd := exec.Command("perf", append(append([]string{"record", "-q", "-F", strconv.Itoa(perfHz), "-g"}, target...), "-o", data)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	r := &perfRecording{name: name, data: data, system: pid <= 0, cmd: cmd, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	time.Sleep(300 * time.Millisecond) // let it attach before the test starts
	return r, nil
}

// profile is where a process spent its sampled CPU.
type profile struct {
	Name       string
	KernelPct  float64 // samples in the kernel (syscalls, copies, softirqs run on its behalf)
	UserPct    float64 // samples in the program itself
	TopSymbols []perfLine
	Report     string // path of the full text report
	// With every CPU sampled: samples by part of the path
	// (attributePerfScript), and what the test delivered, to divide by.
	Parts map[string]int
	Units float64 // packets, or 64 KiB of TCP data
	Unit  string  // "packet" or "64 KiB"
}

// perfHz is the sampling rate of startPerf: a sample stands for 1/perfHz
// CPU seconds.
const perfHz = 999

type perfLine struct {
	Pct    float64
	DSO    string
	Symbol string
}

// stop ends the recording (perf writes its file on SIGINT) and summarises
// it with perf report into dir/name.txt.
func (r *perfRecording) stop(ctx context.Context) (profile, error) {
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
		return profile{}, fmt.Errorf("perf record of %s did not stop", r.name)
	}
	byDSO, err := run(ctx, "perf", "report", "-i", r.data, "--stdio", "--no-children", "--sort", "dso")
	if err != nil {
		return profile{}, err
	}
	bySym, err := run(ctx, "perf", "report", "-i", r.data, "--stdio", "--no-children", "--sort", "dso,symbol", "--percent-limit", "0.5")
	if err != nil {
		return profile{}, err
	}
	txt := strings.TrimSuffix(r.data, ".data") + ".txt"
	if err := os.WriteFile(txt, []byte(bySym), 0o644); err != nil {
		return profile{}, err
	}
	p := profile{Name: r.name, Report: txt}
	for _, l := range parsePerfReport(byDSO) {
		if l.DSO == "[kernel.kallsyms]" {
			p.KernelPct += l.Pct
		} else {
			p.UserPct += l.Pct
		}
	}
	p.TopSymbols = parsePerfReport(bySym)
	if len(p.TopSymbols) > 8 {
		p.TopSymbols = p.TopSymbols[:8]
	}
	if r.system {
		script, err := run(ctx, "perf", "script", "-i", r.data, "-F", "comm,ip,sym,dso")
		if err != nil {
			return profile{}, err
		}
		p.Parts = attributePerfScript(script)
	}
	return p, nil
}

// perfRow matches a `perf report --stdio` row: percentage, DSO, then for
// --sort dso,symbol "[k] name" or "[.] name"; newer perf versions append
// IPC columns ("-  -").
var perfRow = regexp.MustCompile(`^\s+([0-9.]+)%\s+(\S+)(?:\s+\[[^\]]\]\s+(.*?))?(?:\s+-\s+-)?\s*$`)

// parsePerfReport extracts the rows of a perf report, highest first.
func parsePerfReport(out string) []perfLine {
	var lines []perfLine
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		m := perfRow.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		pct, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		lines = append(lines, perfLine{Pct: pct, DSO: m[2], Symbol: strings.TrimSpace(m[3])})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Pct > lines[j].Pct })
	return lines
}

// pathParts name the parts of the forwarding path that a sample of a
// system-wide profile (-perf-system) is charged to, each by the kernel
// functions that mark it. A sample goes to the innermost function of its
// call chain that marks a part: a route lookup inside ip6_forward inside
// map646's tun write is forwarding, the copy inside tun_get_user is the
// tun write.
var pathParts = []struct {
	Part    string
	Markers []string
}{
	{"server: socket delivery", []string{"udp_queue_rcv_skb", "udpv6_queue_rcv_skb", "__udp_enqueue_schedule_skb", "udp_queue_rcv_one_skb", "udpv6_queue_rcv_one_skb", "tcp_v6_rcv", "tcp_v4_rcv", "tcp_v6_do_rcv", "ip6_input_finish", "ip_local_deliver_finish", "ip_protocol_deliver_rcu", "ip6_protocol_deliver_rcu", "sock_def_readable", "tcp_data_queue"}},
	{"server: recv", []string{"udp_recvmsg", "udpv6_recvmsg", "tcp_recvmsg", "__sys_recvfrom", "__sys_recvmsg", "sock_recvmsg"}},
	{"client: send, ACKs", []string{"udp_sendmsg", "udpv6_sendmsg", "tcp_sendmsg", "tcp_sendmsg_locked", "__sys_sendto", "__sys_sendmsg", "sock_write_iter", "tcp_write_xmit", "__tcp_push_pending_frames", "tcp_ack", "tcp_rcv_established"}},
	{"veth xmit, NAPI poll", []string{"veth_xmit", "veth_poll", "veth_xdp_rcv", "__veth_xdp_flush", "veth_xdp_rcv_skb"}},
	{"GRO merge, GSO segment", []string{"napi_gro_receive", "dev_gro_receive", "gro_receive_skb", "napi_complete_done", "skb_segment", "__udp_gso_segment", "tcp_gso_segment", "validate_xmit_skb", "skb_gso_segment", "__skb_gso_segment", "skb_segment_list", "napi_gro_flush", "gro_normal_list"}},
	{"tun read", []string{"tun_do_read", "tun_chr_read_iter", "tun_ring_recv", "tun_put_user"}},
	{"kernel queues into the tun", []string{"tun_net_xmit"}},
	{"kernel routing, forwarding", []string{"ip_forward", "ip6_forward", "ip_rcv", "ipv6_rcv", "ip_rcv_core", "ip6_rcv_core", "ip_route_input_noref", "ip6_route_input", "ip_list_rcv", "ipv6_list_rcv", "__netif_receive_skb_core", "__netif_receive_skb", "netif_receive_skb", "process_backlog", "net_rx_action", "__dev_queue_xmit", "dev_hard_start_xmit", "sch_direct_xmit", "__qdisc_run", "ip_finish_output2", "ip6_finish_output2", "ip_output", "ip6_output"}},
	{"tun write", []string{"tun_get_user", "tun_chr_write_iter"}},
	{"ppoll, epoll, futex", []string{"do_sys_poll", "__x64_sys_ppoll", "do_epoll_wait", "ep_poll", "futex_wait", "__x64_sys_futex", "futex_wake", "do_futex", "do_nanosleep", "hrtimer_nanosleep"}},
	{"scheduler, wake-ups, interrupts", []string{"schedule", "__schedule", "try_to_wake_up", "finish_task_switch", "pick_next_task_fair", "__irq_exit_rcu", "sysvec_apic_timer_interrupt", "asm_sysvec_apic_timer_interrupt", "sysvec_call_function_single", "asm_sysvec_reschedule_ipi", "irqentry_exit_to_user_mode"}},
	{partIdle, []string{"do_idle", "cpuidle_enter", "default_idle", "poll_idle", "cpu_startup_entry", "acpi_idle_enter", "intel_idle"}},
}

const (
	partIdle  = "idle"
	partOther = "other processes"
)

// pathMarker maps a marker function to its part.
var pathMarker = func() map[string]string {
	m := map[string]string{}
	for _, p := range pathParts {
		for _, f := range p.Markers {
			m[f] = p.Part
		}
	}
	return m
}()

// pathComms are the processes on the path: the translators, the tun echo
// (bench/tunecho) and iperf3.
var pathComms = []string{"map646", "tayga", "tunecho", "iperf3"}

// userPart names the part of a sample taken in a process's own code
// (leaf outside the kernel): map646's by Go package, with the system
// call stubs apart (perf charges the `syscall` instruction's cost to
// them).
func userPart(comm, leaf string) string {
	switch {
	case strings.HasPrefix(comm, "map646"):
		switch {
		case strings.Contains(leaf, "RawSyscall") || strings.HasSuffix(strings.TrimSuffix(leaf, ".abi0"), "Syscall6") || strings.HasSuffix(strings.TrimSuffix(leaf, ".abi0"), "Syscall"):
			return "map646: syscall stubs"
		case strings.Contains(leaf, "map646/stack/xlat") || strings.Contains(leaf, "map646/mapping"):
			return "map646: engine"
		case strings.Contains(leaf, "github.com/map646/map646"):
			return "map646: loop, endpoint"
		case strings.Contains(leaf, "gvisor.dev"):
			return "map646: gVisor buffers"
		default:
			return "map646: Go runtime, other"
		}
	case strings.HasPrefix(comm, "tayga"):
		return "TAYGA: its code, libc"
	case strings.HasPrefix(comm, "tunecho"):
		return "tun echo: its code, Go runtime"
	case strings.HasPrefix(comm, "iperf3"):
		return "iperf3: its code"
	}
	return partOther
}

// attributePerfScript counts the samples of `perf script -F
// comm,ip,sym,dso` output (a "comm" line, then one indented frame per
// line, leaf first; a blank line ends a sample) by part of the path.
func attributePerfScript(out string) map[string]int {
	counts := map[string]int{}
	var comm string
	var frames [][2]string // symbol, dso
	flush := func() {
		if len(frames) > 0 {
			counts[samplePart(comm, frames)]++
		}
		frames = frames[:0]
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.TrimSpace(line) == "":
			flush()
			comm = ""
		case line[0] != ' ' && line[0] != '\t':
			flush()
			comm = strings.Fields(line)[0]
		default:
			// "  ffffffff8175781c ep_check_params+0x1c ([kernel.kallsyms])"
			f := strings.TrimSpace(line)
			_, rest, ok := strings.Cut(f, " ")
			if !ok {
				continue
			}
			i := strings.LastIndex(rest, " (")
			if i < 0 || !strings.HasSuffix(rest, ")") {
				continue
			}
			frames = append(frames, [2]string{strings.TrimSpace(rest[:i]), rest[i+2 : len(rest)-1]})
		}
	}
	flush()
	return counts
}

// samplePart is the part one sample (its process and call chain, leaf
// first) is charged to.
func samplePart(comm string, frames [][2]string) string {
	for _, fr := range frames {
		sym, _, _ := strings.Cut(fr[0], "+")
		if p, ok := pathMarker[sym]; ok {
			return p
		}
	}
	onPath := false
	for _, c := range pathComms {
		onPath = onPath || strings.HasPrefix(comm, c)
	}
	if !onPath {
		return partOther
	}
	if !strings.HasPrefix(frames[0][1], "[kernel") {
		leaf, _, _ := strings.Cut(frames[0][0], "+")
		return userPart(comm, leaf)
	}
	who := "translator"
	if strings.HasPrefix(comm, "iperf3") {
		who = "iperf3"
	}
	return who + ": syscall entry/exit, other kernel"
}
