package xlat

import (
	"os/exec"
	"regexp"
	"testing"
)

// hotInlined are the small helpers of the per-packet path that must fit
// the compiler's inlining budget. Each non-inlined call costs a frame and
// the spills around it on every packet; docs/benchmarks.md measures what
// they cost the 4->6 steps (issue 11). A change that pushes one over the
// budget fails here instead of showing up as a slower benchmark.
var hotInlined = []string{
	"adjust",          // every TCP and UDP checksum
	"(*in4).parse",    // every IPv4 packet
	"(*in4).isErr",    // read by several 4->6 steps
	"(*in4).first",    //
	"(*in4).isFrag",   //
	"(*in4).hlen6",    //
	"moveOffload",     // every packet with offload metadata
	"partialCsum",     //
	"illegal4",        // both directions
	"(*state).maybe4", //
}

func TestHotHelpersInline(t *testing.T) {
	out, err := exec.Command("go", "build", "-gcflags=-m", "-o", "/dev/null", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -gcflags=-m: %v\n%s", err, out)
	}
	for _, fn := range hotInlined {
		re := regexp.MustCompile(`(?m)^\S+: can inline ` + regexp.QuoteMeta(fn) + `$`)
		if !re.Match(out) {
			t.Errorf("%s no longer inlines (go build -gcflags=-m=2 says why)", fn)
		}
	}
}
