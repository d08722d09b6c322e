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
	cmd := exec.Command("perf", append(append([]string{"record", "-q", "-F", "999", "-g"}, target...), "-o", data)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	r := &perfRecording{name: name, data: data, cmd: cmd, done: make(chan error, 1)}
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
}

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
