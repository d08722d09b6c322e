package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is a long-running program (a translator, the iperf3 server) that
// the harness started inside a network namespace. It runs in its own process
// group so that stopping it by PID also stops anything it spawned.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set when done is closed
	log  string
}

// startIn starts argv inside namespace ns with `ip netns exec`, which execs
// the program in place: the PID we hold is the program's own, so its CPU time
// can be read from /proc/PID/stat. Output goes to logPath.
func startIn(ns, logPath string, argv ...string) (*process, error) {
	return startInWith(ns, logPath, nil, argv...)
}

// startInWith is startIn that also hands the program extra descriptors,
// numbered from 3 (ip netns exec passes them on: it execs in place).
func startInWith(ns, logPath string, extra []*os.File, argv ...string) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.ExtraFiles = extra
	// Pdeathsig: if the harness itself is killed, its children go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &process{name: argv[0], cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// PID is the program's process id.
func (p *process) PID() int { return p.cmd.Process.Pid }

// exited reports whether the program has already terminated.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs
// it. It returns the program's log tail if it had died before being stopped.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return fmt.Errorf("%s (pid %d) had exited early: %v%s", p.name, p.PID(), p.err, p.logTail())
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.PID(), grace)
}

// logTail returns the last lines of the program's output, for error messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\n  " + p.name + " log (" + p.log + "):\n    " + strings.Join(lines, "\n    ")
}

// cpuTicks returns utime+stime of a process (all its threads) in clock
// ticks, from fields 14 and 15 of /proc/PID/stat (proc(5)).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatTicks(b)
}

// parseStatTicks extracts utime+stime from the text of /proc/PID/stat. The
// command name (field 2) may contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command field")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command", len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat stime: %w", err)
	}
	return ut + st, nil
}

// clockTicksPerSecond is USER_HZ, which the kernel ABI fixes at 100 on every
// architecture Go supports on Linux (sysconf(_SC_CLK_TCK) needs cgo).
const clockTicksPerSecond = 100

// run executes a short command and returns its combined output, with the
// output in the error when it fails.
func run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// runIn executes a short command inside namespace ns.
func runIn(ctx context.Context, ns string, argv ...string) (string, error) {
	return run(ctx, append([]string{"ip", "netns", "exec", ns}, argv...)...)
}
