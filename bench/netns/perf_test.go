package main

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

func TestParsePerfReport(t *testing.T) {
	out := `# Samples: 1K of event 'cpu-clock:ppp'
#
# Overhead  Shared Object      Symbol                                                  IPC   [IPC Coverage]
# ........  .................  ......................................................  ....................
#
     1.38%  map646             [.] internal/runtime/syscall/linux.Syscall6               -      -            
    18.17%  [kernel.kallsyms]  [k] finish_task_switch.isra.0                             -      -            
     0.74%  [kernel.kallsyms]  [k] veth_xmit
`
	got := parsePerfReport(out)
	want := []perfLine{
		{18.17, "[kernel.kallsyms]", "finish_task_switch.isra.0"},
		{1.38, "map646", "internal/runtime/syscall/linux.Syscall6"},
		{0.74, "[kernel.kallsyms]", "veth_xmit"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	byDSO := parsePerfReport("    92.62%  [kernel.kallsyms]\n     7.10%  map646           \n     0.28%  [vdso]           \n")
	if len(byDSO) != 3 || byDSO[1].DSO != "map646" || byDSO[1].Pct != 7.10 || byDSO[1].Symbol != "" {
		t.Errorf("by dso: %+v", byDSO)
	}
}

// TestAttributePerfScript feeds `perf script -F comm,ip,sym,dso` output
// through the attribution: the innermost marking function decides, user
// code goes by process and Go package, other processes and idle apart.
func TestAttributePerfScript(t *testing.T) {
	out := `map646 
	ffffffff81a1 fib6_node_lookup_1+0x21 ([kernel.kallsyms])
	ffffffff81a2 ip6_forward+0x100 ([kernel.kallsyms])
	ffffffff81a3 tun_get_user+0x300 ([kernel.kallsyms])
	ffffffff81a4 do_syscall_64+0x50 ([kernel.kallsyms])
	          4a1 internal/runtime/syscall/linux.Syscall6 (/tmp/map646)

map646 
	ffffffff81b1 memcpy_orig+0x10 ([kernel.kallsyms])
	ffffffff81b2 tun_get_user+0x200 ([kernel.kallsyms])

map646 
	          4b1 github.com/map646/map646/stack/xlat.(*Engine).Process (/tmp/map646)
	          4b2 github.com/map646/map646/stack.(*handlerQueue).send (/tmp/map646)

map646 
	          4c1 internal/runtime/syscall/linux.Syscall6 (/tmp/map646)
	          4c2 syscall.RawSyscall (/tmp/map646)

map646 
	          4d1 gvisor.dev/gvisor/pkg/buffer.(*Buffer).Apply (/tmp/map646)

map646 
	ffffffff81c1 pvm_irq_enable+0x5 ([kernel.kallsyms])
	ffffffff81c2 do_syscall_64+0x50 ([kernel.kallsyms])

iperf3 
	ffffffff81d1 veth_xmit+0x10 ([kernel.kallsyms])
	ffffffff81d2 ip_finish_output2+0x10 ([kernel.kallsyms])
	ffffffff81d3 udp_sendmsg+0x10 ([kernel.kallsyms])

iperf3 
	ffffffff81e1 memcpy_orig+0x10 ([kernel.kallsyms])
	ffffffff81e2 udpv6_queue_rcv_skb+0x10 ([kernel.kallsyms])
	ffffffff81e3 ip6_forward+0x10 ([kernel.kallsyms])

swapper 
	ffffffff81f1 default_idle+0x10 ([kernel.kallsyms])
	ffffffff81f2 do_idle+0x10 ([kernel.kallsyms])

tunecho 
	          5a1 main.echo (/tmp/tunecho)

tunecho 
	ffffffff8231 entry_SYSCALL_64+0x10 ([kernel.kallsyms])

compile 
	          7e7b9 runtime.step (/usr/local/go/pkg/tool/linux_amd64/compile)

compile 
	ffffffff8175781c ep_check_params ([kernel.kallsyms])
`
	got := attributePerfScript(out)
	want := map[string]int{
		"kernel routing, forwarding":                   1,
		"tun write":                                    1,
		"map646: engine":                               1,
		"map646: syscall stubs":                        1,
		"map646: gVisor buffers":                       1,
		"translator: syscall entry/exit, other kernel": 2,
		"tun echo: its code, Go runtime":               1,
		"veth xmit, NAPI poll":                         1,
		"server: socket delivery":                      1,
		partIdle:                                       1,
		partOther:                                      2,
	}
	if !maps.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}

	// 999 samples are one CPU second: over 1e6 packets, 1 µs each.
	profs := []profile{
		{Name: "map646 tun, UDP 64 B", Parts: map[string]int{"tun write": 999, "map646: engine": 1998, partIdle: 5000, partOther: 7}, Units: 1e6, Unit: "packet"},
		{Name: "native IPv6, UDP 64 B", Parts: map[string]int{"kernel routing, forwarding": 999 * 3}, Units: 1e6, Unit: "packet"},
	}
	var b strings.Builder
	renderPathProfile(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, profs)
	md := b.String()
	for _, line := range []string{
		"| part | map646 tun, UDP 64 B | native IPv6, UDP 64 B |",
		"| kernel routing, forwarding |  | 3.00 |",
		"| tun write | 1.00 |  |",
		"| map646: engine | 2.00 |  |",
		"| **path total** (without idle CPUs and other processes) | **3.00** | **3.00** |",
	} {
		if !strings.Contains(md, line+"\n") {
			t.Errorf("no line %q in\n%s", line, md)
		}
	}
	if strings.Contains(md, "| idle |") || strings.Contains(md, "| "+partOther+" |") {
		t.Errorf("idle or other processes shown:\n%s", md)
	}
}
