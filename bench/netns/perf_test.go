package main

import "testing"

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
