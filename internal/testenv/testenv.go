// Package testenv decides what a test does when the machine lacks something
// it needs (root, network namespaces, /dev/net/tun, QEMU, a tool): outside
// CI it skips with the reason; on CI (CI=true, as CI systems set it) it
// fails, because `go test` without -v prints "ok" for a package whose tests
// all skipped, and a CI machine without root would otherwise pass having
// tested nothing.
package testenv

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// InCI reports whether the CI environment variable is set to a true value
// ("true", "1", ...), as GitHub Actions, GitLab CI and most others set it.
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// SkipOrFail stops t because the machine cannot run it: t.Skip with why,
// or t.Fatal on CI, where every capability must be present.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true: this test must run here, but %s", why)
	}
	t.Skip(why + " (with CI=true this fails the run)")
}

// SkipOrFailf is SkipOrFail with a formatted reason.
func SkipOrFailf(t testing.TB, format string, args ...any) {
	t.Helper()
	SkipOrFail(t, fmt.Sprintf(format, args...))
}

// LargeEnv opts in to the tests that build and time 1M-entry tables
// (`make test-large`): a minute of CPU that every `go test ./...` should
// not pay, and whose times are only meaningful on a quiet machine.
const LargeEnv = "MAP646_LARGE"

// RequireLarge skips t unless LargeEnv=1. It is a deliberate opt-in, not a
// missing capability, so it skips on CI as well.
func RequireLarge(t testing.TB) {
	t.Helper()
	if os.Getenv(LargeEnv) != "1" {
		t.Skip("a timed 1M-entry run: set " + LargeEnv + "=1 (make test-large) to run it")
	}
}
