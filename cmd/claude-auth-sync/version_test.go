package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, tc := range []struct {
		name string
		set  string
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{"set by -ldflags", "1.4.0", &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}}, true, "1.4.0"},
		{"module version", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, true, "v1.4.0"},
		{"pseudo-version", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261206001234-0123456789ab+dirty"}}, true, "v0.0.0-20261206001234-0123456789ab+dirty"},
		{"revision only", "dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("0123456789abcdef0123", "false")}, true, "dev-0123456789ab"},
		{"revision, modified", "dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("0123456789abcdef0123", "true")}, true, "dev-0123456789ab+dirty"},
		{"nothing recorded", "dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "dev"},
		{"no build info", "dev", nil, false, "dev"},
	} {
		if got := buildVersion(tc.set, tc.info, tc.ok); got != tc.want {
			t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
		}
	}
}

// A plain `go build` (no -ldflags) of a git checkout prints what the
// toolchain recorded in the binary, as `go version -m` reads it, not "dev".
// The module is copied into a fresh repository of one commit: the checkout
// the test runs in may be a worktree, which the toolchain does not stamp.
func TestVersionOfPlainBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(t.TempDir(), "src")
	if err := os.CopyFS(repo, os.DirFS(root)); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(filepath.Join(repo, ".git"))
	run := func(dir string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=true", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
		return string(out)
	}
	run(repo, "git", "init", "-q")
	run(repo, "git", "add", "-A")
	run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "t")
	rev := strings.TrimSpace(run(repo, "git", "rev-parse", "HEAD"))
	bin := filepath.Join(t.TempDir(), "claude-auth-sync")
	run(filepath.Join(repo, "cmd", "claude-auth-sync"), "go", "build", "-o", bin, ".")

	want := ""
	for _, line := range strings.Split(run(repo, "go", "version", "-m", bin), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "mod" {
			want = f[2]
		}
	}
	if want == "" || want == "(devel)" || !strings.Contains(want, rev[:12]) {
		t.Fatalf("the toolchain recorded module version %q; want a pseudo-version of %s", want, rev[:12])
	}
	if got := strings.TrimSpace(run(repo, bin, "--version")); got != "claude-auth-sync "+want {
		t.Errorf("--version = %q; want %q", got, "claude-auth-sync "+want)
	}
}
