package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// helperEnv makes the test binary run TestHelperSkipOrFail for real.
const helperEnv = "MAP646_TESTENV_HELPER"

// TestHelperSkipOrFail is the subject of TestSkipOrFail, run in a child
// process; on its own it returns at once.
func TestHelperSkipOrFail(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	SkipOrFailf(t, "needs %s", "a unicorn")
	t.Log("unreachable: SkipOrFail returned")
}

// TestSkipOrFail runs a test that calls SkipOrFail in a child process
// under each CI setting and checks go test's verdict on it.
func TestSkipOrFail(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ci      string // "" unsets CI
		fails   bool
		outputs []string
	}{
		{"", false, []string{"--- SKIP: TestHelperSkipOrFail", "needs a unicorn (with CI=true this fails the run)"}},
		{"false", false, []string{"--- SKIP: TestHelperSkipOrFail"}},
		{"true", true, []string{"--- FAIL: TestHelperSkipOrFail", "CI=true: this test must run here, but needs a unicorn"}},
		{"1", true, []string{"--- FAIL: TestHelperSkipOrFail"}},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run=^TestHelperSkipOrFail$", "-test.v", "-test.count=1")
			var env []string
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "CI=") {
					env = append(env, kv)
				}
			}
			env = append(env, helperEnv+"=1")
			if tc.ci != "" {
				env = append(env, "CI="+tc.ci)
			}
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.fails {
				t.Errorf("child failed = %v (%v), want %v:\n%s", failed, err, tc.fails, out)
			}
			for _, want := range tc.outputs {
				if !strings.Contains(string(out), want) {
					t.Errorf("child output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(string(out), "unreachable") {
				t.Errorf("SkipOrFail returned:\n%s", out)
			}
		})
	}
}

// TestHelperRequireLarge is the subject of TestRequireLarge.
func TestHelperRequireLarge(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	RequireLarge(t)
	t.Log("the large run goes on")
}

// TestRequireLarge: the 1M-entry tests run only with MAP646_LARGE=1, and
// skip without it even on CI (an opt-in, not a missing capability).
func TestRequireLarge(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "--- SKIP: TestHelperRequireLarge"},
		{[]string{"CI=true"}, "--- SKIP: TestHelperRequireLarge"},
		{[]string{LargeEnv + "=1", "CI=true"}, "the large run goes on"},
	} {
		cmd := exec.Command(exe, "-test.run=^TestHelperRequireLarge$", "-test.v", "-test.count=1")
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "CI=") && !strings.HasPrefix(kv, LargeEnv+"=") {
				env = append(env, kv)
			}
		}
		cmd.Env = append(append(env, helperEnv+"=1"), tc.env...)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("env %v: %v, want %q in:\n%s", tc.env, err, tc.want, out)
		}
	}
}
