package e2e_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The packages as an admin gets them: built by `make package`, inspected with
// dpkg-deb and rpm, installed into throwaway roots (maintainer scripts run in a
// chroot against a recording systemctl), every unit checked with
// systemd-analyze verify, exposure reported with systemd-analyze security.
// .ci/run installs rpm; CI runs as root.

const pkgVersion = "1.2.3.e2e" // what the Makefile makes of VERSION=1.2.3-e2e

// packaged lists every file and dir the packages hold, with its mode.
var packaged = map[string]string{
	"/usr/bin/claude-auth-sync":                                    "-rwxr-xr-x",
	"/usr/lib/systemd/user/claude-auth-sync.service":               "-rw-r--r--",
	"/usr/lib/systemd/system/claude-auth-sync-agent@.service":      "-rw-r--r--",
	"/usr/lib/systemd/system/claude-auth-sync@.service":            "-rw-r--r--",
	"/usr/lib/systemd/system/claude-auth-sync@.timer":              "-rw-r--r--",
	"/usr/lib/systemd/system/claude-auth-sync-provision.service":   "-rw-r--r--",
	"/usr/lib/systemd/system/claude-auth-sync-provision.timer":     "-rw-r--r--",
	"/usr/lib/systemd/system/claude-auth-sync-metrics.service":     "-rw-r--r--",
	"/etc/claude-auth-sync":                                        "drwxr-xr-x",
	"/etc/claude-auth-sync/config":                                 "-rw-r--r--",
	"/var/lib/claude-auth-sync":                                    "drwxr-xr-x",
	"/usr/share/doc/claude-auth-sync/README.md":                    "-rw-r--r--",
	"/usr/share/doc/claude-auth-sync/runbook.md":                   "-rw-r--r--",
	"/usr/share/doc/claude-auth-sync/provisioning.md":              "-rw-r--r--",
	"/usr/share/doc/claude-auth-sync/fleet.md":                     "-rw-r--r--",
	"/usr/share/doc/claude-auth-sync/examples/start-claude.sh":     "-rwxr-xr-x",
	"/usr/share/doc/claude-auth-sync/examples/roster.yaml":         "-rw-r--r--",
	"/usr/share/doc/claude-auth-sync/alerts/loki-rules.yaml":       "-rw-r--r--",
	"/usr/share/doc/claude-auth-sync/alerts/prometheus-rules.yaml": "-rw-r--r--",
	"/usr/share/doc/claude-auth-sync/copyright":                    "-rw-r--r--",
	"/usr/share/doc/claude-auth-sync/changelog.gz":                 "-rw-r--r--",
	"/usr/share/man/man1/claude-auth-sync.1.gz":                    "-rw-r--r--",
	"/usr/share/bash-completion/completions/claude-auth-sync":      "-rw-r--r--",
	"/usr/share/zsh/vendor-completions/_claude-auth-sync":          "-rw-r--r--",
	"/usr/share/zsh/site-functions/_claude-auth-sync":              "-rw-r--r--",
	"/usr/share/fish/vendor_completions.d/claude-auth-sync.fish":   "-rw-r--r--",
}

var systemUnits = []string{
	"claude-auth-sync-agent@.service", "claude-auth-sync@.service", "claude-auth-sync@.timer",
	"claude-auth-sync-provision.service", "claude-auth-sync-provision.timer", "claude-auth-sync-metrics.service",
}

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: the packaging test needs it (.ci/run installs rpm: apt-get install -y rpm)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("the packaging test needs root (CI runs as root): it installs into chroots")
	}
}

func mustCmd(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func TestPackages(t *testing.T) {
	needTools(t, "make", "dpkg", "dpkg-deb", "rpm", "systemd-analyze")
	root := repoRoot(t)
	mustCmd(t, root, nil, "make", "package", "VERSION=1.2.3-e2e")
	deb := filepath.Join(root, "dist", "claude-auth-sync_"+pkgVersion+"_amd64.deb")
	rpm := filepath.Join(root, "dist", "claude-auth-sync-"+pkgVersion+"-1.x86_64.rpm")
	for _, p := range []string{deb, rpm, filepath.Join(root, "dist", "claude-auth-sync")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("make package did not make %s: %v", p, err)
		}
		t.Logf("size %s: %d bytes (%.1f MiB)", filepath.Base(p), fi.Size(), float64(fi.Size())/(1<<20))
	}

	t.Run("deb contents", func(t *testing.T) {
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(mustCmd(t, "", nil, "dpkg-deb", "-c", deb)), "\n") {
			f := strings.Fields(l)
			if len(f) < 6 {
				t.Fatalf("dpkg-deb -c line %q", l)
			}
			path := strings.TrimSuffix(strings.TrimPrefix(f[len(f)-1], "."), "/")
			if f[1] != "root/root" {
				t.Errorf("%s owned by %s; want root/root", path, f[1])
			}
			got[path] = f[0]
		}
		for path, mode := range packaged {
			if got[path] != mode {
				t.Errorf("deb: %s mode %q; want %q", path, got[path], mode)
			}
		}
		for path, mode := range got {
			if _, ok := packaged[path]; !ok && !strings.HasPrefix(mode, "d") {
				t.Errorf("deb holds an unexpected file %s", path)
			}
		}
	})

	t.Run("deb control", func(t *testing.T) {
		if v := strings.TrimSpace(mustCmd(t, "", nil, "dpkg-deb", "-f", deb, "Version")); v != pkgVersion {
			t.Errorf("Version %q; want %q", v, pkgVersion)
		}
		if c := strings.TrimSpace(mustCmd(t, "", nil, "dpkg-deb", "-I", deb, "conffiles")); c != "/etc/claude-auth-sync/config" {
			t.Errorf("conffiles = %q; want only /etc/claude-auth-sync/config", c)
		}
		info := mustCmd(t, "", nil, "dpkg-deb", "-I", deb)
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			if !regexp.MustCompile(`\d+ bytes,\s+\d+ lines\s+\*\s+` + s + `\s`).MatchString(info) {
				t.Errorf("dpkg-deb -I: no executable %s\n%s", s, info)
			}
		}
		ctl := t.TempDir()
		mustCmd(t, "", nil, "dpkg-deb", "-e", deb, ctl)
		for pkgName, src := range map[string]string{"postinst": "postinstall.sh", "prerm": "preremove.sh", "postrm": "postremove.sh"} {
			got, _ := os.ReadFile(filepath.Join(ctl, pkgName))
			want, _ := os.ReadFile(filepath.Join(root, "packaging", "scripts", src))
			if !bytes.Equal(got, want) {
				t.Errorf("the deb's %s differs from packaging/scripts/%s", pkgName, src)
			}
		}
	})

	t.Run("rpm", func(t *testing.T) {
		files := strings.Fields(mustCmd(t, "", nil, "rpm", "-qlp", rpm))
		var want []string
		for p := range packaged {
			want = append(want, p)
		}
		sort.Strings(files)
		sort.Strings(want)
		if !slices.Equal(files, want) {
			t.Errorf("rpm -qlp = %v; want %v", files, want)
		}
		if c := strings.TrimSpace(mustCmd(t, "", nil, "rpm", "-qcp", rpm)); c != "/etc/claude-auth-sync/config" {
			t.Errorf("rpm -qcp = %q; want /etc/claude-auth-sync/config", c)
		}
		modes := mustCmd(t, "", nil, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags}\n]`, rpm)
		for _, l := range strings.Split(strings.TrimSpace(modes), "\n") {
			f := strings.Fields(l)
			if len(f) < 3 {
				t.Fatalf("rpm --qf line %q", l)
			}
			if packaged[f[0]] != f[1] || f[2] != "root:root" {
				t.Errorf("rpm: %s %s %s; want %s root:root", f[0], f[1], f[2], packaged[f[0]])
			}
			if f[0] == "/etc/claude-auth-sync/config" && (len(f) < 4 || f[3] != "cn") {
				t.Errorf("rpm: the config's flags are %v; want cn (config, noreplace)", f[3:])
			}
		}
		scripts := mustCmd(t, "", nil, "rpm", "-qp", "--scripts", rpm)
		for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "systemctl daemon-reload", "[ -d /run/systemd/system ]"} {
			if !strings.Contains(scripts, s) {
				t.Errorf("rpm --scripts lacks %q", s)
			}
		}
	})

	t.Run("maintainer scripts never enable or start", func(t *testing.T) {
		for _, s := range []string{"postinstall.sh", "preremove.sh", "postremove.sh"} {
			data, _ := os.ReadFile(filepath.Join(root, "packaging", "scripts", s))
			guarded := false
			heredoc := ""      // inside text that cat prints: words, not commands
			migrating := false // the upgrade from a build where claude-auth-sync@ was the agent
			for i, l := range strings.Split(string(data), "\n") {
				if heredoc != "" {
					if strings.TrimSpace(l) == heredoc {
						heredoc = ""
					}
					continue
				}
				code := strings.TrimSpace(strings.SplitN(l, "#", 2)[0])
				if m := catHeredoc.FindStringSubmatch(code); m != nil {
					heredoc = m[2]
				}
				if strings.Contains(code, "[ -d /run/systemd/system ]") {
					guarded = true
				}
				if code == "fi" {
					guarded = false
				}
				switch {
				case strings.HasPrefix(code, "migrate_agents() {"), strings.HasPrefix(code, "migrate_metrics_unit() {"):
					migrating = true
				case migrating && code == "}":
					migrating = false
				}
				// The migration moves what was enabled to its new names, only
				// those (the chroot test below runs it).
				if migrating && regexp.MustCompile(`^\*\.(service|timer)\) systemctl enable --now "claude-auth-sync(-agent@\$user\.service" "claude-auth-sync)?@\$user\.timer"|^systemctl start "claude-auth-sync-agent@\$user\.service"`).MatchString(code) {
					continue
				}
				// From the shared metrics dir: the publisher carries on what the
				// agents published themselves (the systemd story runs it).
				if migrating && code == "systemctl enable --now claude-auth-sync-metrics.service >/dev/null 2>&1 || :" {
					continue
				}
				if regexp.MustCompile(`systemctl\s+(enable|start|restart|reenable|preset)\b|--now`).MatchString(code) {
					t.Errorf("%s:%d enables or starts units: %s", s, i+1, code)
				}
				if strings.Contains(code, "systemctl") && !guarded {
					t.Errorf("%s:%d runs systemctl without checking systemd runs: %s", s, i+1, code)
				}
				if strings.Contains(code, "rm ") && (strings.Contains(code, "/home") || strings.Contains(code, "~")) {
					t.Errorf("%s:%d removes users' data: %s", s, i+1, code)
				}
			}
		}
	})

	t.Run("deb installs into a throwaway root", func(t *testing.T) {
		r := newChroot(t, true)
		out := mustCmd(t, "", nil, "dpkg", "--root="+r.dir, "-i", deb)
		// A first install says what to do next, and does none of it.
		for _, s := range []string{"no agent runs yet", "/etc/claude-auth-sync/config", "roster.yaml",
			"claude-auth-sync provision", "systemctl --user enable --now claude-auth-sync"} {
			if !strings.Contains(out, s) {
				t.Errorf("a fresh install does not tell the next step %q:\n%s", s, out)
			}
		}
		for path, mode := range packaged {
			fi, err := os.Lstat(filepath.Join(r.dir, path))
			if err != nil {
				t.Errorf("installed: %s: %v", path, err)
				continue
			}
			if got := fi.Mode().String(); got != mode {
				t.Errorf("installed: %s mode %s; want %s", path, got, mode)
			}
		}
		if got := r.calls(); !slices.Equal(got, []string{"daemon-reload"}) {
			t.Errorf("install ran systemctl %q; want only daemon-reload", got)
		}
		// Reinstall = upgrade: running agents restart, nothing gets enabled.
		if out := mustCmd(t, "", nil, "dpkg", "--root="+r.dir, "-i", deb); strings.Contains(out, "no agent runs yet") {
			t.Errorf("an upgrade repeats the first install's next steps:\n%s", out)
		}
		listRunning := "list-units --plain --no-legend --state=running claude-auth-sync@*.service"
		if got := r.calls(); !slices.Equal(got, []string{"daemon-reload", "daemon-reload", "try-restart claude-auth-sync-agent@*.service", listRunning}) {
			t.Errorf("upgrade ran systemctl %q", got)
		}
		// An upgrade from a build where claude-auth-sync@<user>.service was
		// the agent: the enabled agent and pass timer move to their new names.
		for _, l := range []string{"multi-user.target.wants/claude-auth-sync@alice.service", "timers.target.wants/claude-auth-sync-pass@bob.timer"} {
			p := filepath.Join(r.dir, "etc/systemd/system", l)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.Symlink("/usr/lib/systemd/system/"+strings.Replace(filepath.Base(l), "alice", "", 1), p); err != nil {
				t.Fatal(err)
			}
		}
		mustCmd(t, "", nil, "dpkg", "--root="+r.dir, "-i", deb)
		if got, want := r.calls(), []string{"daemon-reload", "daemon-reload", "try-restart claude-auth-sync-agent@*.service", listRunning,
			"stop claude-auth-sync@alice.service", "enable --now claude-auth-sync-agent@alice.service claude-auth-sync@alice.timer",
			"stop claude-auth-sync-pass@bob.timer", "enable --now claude-auth-sync@bob.timer"}; !slices.Equal(got, want) {
			t.Errorf("upgrade from the agent-named build ran systemctl %q; want %q", got, want)
		}
		if left, _ := filepath.Glob(filepath.Join(r.dir, "etc/systemd/system/*/claude-auth-sync*")); len(left) > 0 {
			t.Errorf("old enablement links left: %v", left)
		}
		// An admin's roster, provision's state, a user's home: remove and
		// purge must take only what the package owns.
		os.WriteFile(filepath.Join(r.dir, "etc/claude-auth-sync/roster.yaml"), []byte("users: {}\n"), 0o644)
		os.WriteFile(filepath.Join(r.dir, "var/lib/claude-auth-sync/provisioned-users.json"), []byte(`{"users":[]}`), 0o644)
		os.MkdirAll(filepath.Join(r.dir, "home/alice/.config/claude-auth-sync"), 0o700)
		os.WriteFile(filepath.Join(r.dir, "home/alice/.config/claude-auth-sync/vault-token"), []byte("x\n"), 0o600)
		mustCmd(t, "", nil, "dpkg", "--root="+r.dir, "-r", "claude-auth-sync")
		if got := r.calls(); len(got) != 2 || !strings.HasPrefix(got[0], "stop ") || got[1] != "daemon-reload" {
			t.Errorf("remove ran systemctl %q; want stop …, daemon-reload", got)
		}
		for _, gone := range []string{"usr/bin/claude-auth-sync", "usr/lib/systemd/system/claude-auth-sync@.service"} {
			if _, err := os.Lstat(filepath.Join(r.dir, gone)); !os.IsNotExist(err) {
				t.Errorf("after remove %s is still there", gone)
			}
		}
		for _, kept := range []string{"etc/claude-auth-sync/config", "var/lib/claude-auth-sync/provisioned-users.json"} {
			if _, err := os.Lstat(filepath.Join(r.dir, kept)); err != nil {
				t.Errorf("remove (not purge) took %s: %v", kept, err)
			}
		}
		mustCmd(t, "", nil, "dpkg", "--root="+r.dir, "-P", "claude-auth-sync")
		for _, gone := range []string{"etc/claude-auth-sync/config", "var/lib/claude-auth-sync"} {
			if _, err := os.Lstat(filepath.Join(r.dir, gone)); !os.IsNotExist(err) {
				t.Errorf("after purge %s is still there", gone)
			}
		}
		for _, kept := range []string{"etc/claude-auth-sync/roster.yaml", "home/alice/.config/claude-auth-sync/vault-token"} {
			if _, err := os.Lstat(filepath.Join(r.dir, kept)); err != nil {
				t.Errorf("purge took %s, which the package does not own: %v", kept, err)
			}
		}
	})

	t.Run("no systemd running: scripts call no systemctl", func(t *testing.T) {
		r := newChroot(t, false)
		mustCmd(t, "", nil, "dpkg", "--root="+r.dir, "-i", deb)
		mustCmd(t, "", nil, "dpkg", "--root="+r.dir, "-P", "claude-auth-sync")
		if got := r.calls(); len(got) != 0 {
			t.Errorf("without /run/systemd/system the scripts ran systemctl %q", got)
		}
	})

	t.Run("rpm installs into a throwaway root", func(t *testing.T) {
		r := newChroot(t, true)
		mustCmd(t, "", nil, "rpm", "--root="+r.dir, "--initdb")
		if out := mustCmd(t, "", nil, "rpm", "-i", "--root="+r.dir, "--nodeps", rpm); !strings.Contains(out, "systemctl --user enable --now claude-auth-sync") {
			t.Errorf("a fresh rpm install does not tell the next step:\n%s", out)
		}
		for path, mode := range packaged {
			fi, err := os.Lstat(filepath.Join(r.dir, path))
			if err != nil || fi.Mode().String() != mode {
				t.Errorf("rpm installed %s: %v %v; want %s", path, fi.Mode(), err, mode)
			}
		}
		if got := r.calls(); !slices.Equal(got, []string{"daemon-reload"}) {
			t.Errorf("rpm install ran systemctl %q; want only daemon-reload", got)
		}
		mustCmd(t, "", nil, "rpm", "-e", "--root="+r.dir, "--nodeps", "claude-auth-sync")
		if got := r.calls(); len(got) != 2 || !strings.HasPrefix(got[0], "stop ") {
			t.Errorf("rpm erase ran systemctl %q", got)
		}
	})

	t.Run("units", func(t *testing.T) {
		r := t.TempDir()
		mustCmd(t, "", nil, "dpkg-deb", "-x", deb, r)
		checkUnitText(t, r)
		// verify --root needs the units the ours pull in and /bin/kill there.
		hostUnits, _ := filepath.Glob("/usr/lib/systemd/system/*")
		for _, u := range hostUnits {
			dst := filepath.Join(r, "usr/lib/systemd/system", filepath.Base(u))
			if _, err := os.Lstat(dst); os.IsNotExist(err) {
				exec.Command("cp", "-a", u, dst).Run()
			}
		}
		kill, _ := os.ReadFile("/usr/bin/kill")
		os.WriteFile(filepath.Join(r, "usr/bin/kill"), kill, 0o755)
		os.Symlink("usr/bin", filepath.Join(r, "bin"))
		for _, u := range []string{"claude-auth-sync-agent@alice.service", "claude-auth-sync@alice.service", "claude-auth-sync@alice.timer",
			"claude-auth-sync-provision.service", "claude-auth-sync-provision.timer", "claude-auth-sync-metrics.service"} {
			out, err := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+r, u).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
			}
		}
		// The user unit: --root has no user mode, so verify a copy whose
		// ExecStart points at the extracted binary.
		unit, _ := os.ReadFile(filepath.Join(r, "usr/lib/systemd/user/claude-auth-sync.service"))
		if !bytes.Contains(unit, []byte("ExecStart=/usr/bin/claude-auth-sync run\n")) {
			t.Errorf("the user unit does not run /usr/bin/claude-auth-sync run")
		}
		ud := t.TempDir()
		userUnit := filepath.Join(ud, "claude-auth-sync.service")
		os.WriteFile(userUnit, bytes.ReplaceAll(unit, []byte("/usr/bin/claude-auth-sync"), []byte(filepath.Join(r, "usr/bin/claude-auth-sync"))), 0o644)
		xdg := t.TempDir()
		userEnv := append(os.Environ(), "XDG_RUNTIME_DIR="+xdg)
		cmd := exec.Command("systemd-analyze", "--user", "verify", "--man=no", userUnit)
		cmd.Env = userEnv
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze --user verify claude-auth-sync.service: %v\n%s", err, out)
		}

		// Exposure, for the record and against regressions.
		exposure := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)
		for _, u := range []struct {
			unit string
			max  float64
			user bool
		}{
			{"claude-auth-sync-agent@alice.service", 3.0, false},
			{"claude-auth-sync@alice.service", 3.0, false},
			{"claude-auth-sync-provision.service", 4.0, false},
			{"claude-auth-sync-metrics.service", 2.5, false},
			{userUnit, 5.0, true},
		} {
			args := []string{"security", "--offline=true", "--root=" + r, u.unit}
			if u.user {
				args = []string{"--user", "security", "--offline=true", u.unit}
			}
			cmd := exec.Command("systemd-analyze", args...)
			cmd.Env = userEnv
			out, _ := cmd.CombinedOutput()
			m := exposure.FindStringSubmatch(string(out))
			if m == nil {
				t.Errorf("systemd-analyze security %s: no exposure level\n%s", u.unit, out)
				continue
			}
			t.Logf("systemd-analyze security: %s exposure %s %s", filepath.Base(m[1]), m[2], m[3])
			var level float64
			fmt.Sscan(m[2], &level)
			if level > u.max {
				t.Errorf("%s exposure %.1f; want at most %.1f (hardening regressed?)", m[1], level, u.max)
			}
		}
	})

	t.Run("man page, completions, copyright, changelog", func(t *testing.T) {
		r := t.TempDir()
		mustCmd(t, "", nil, "dpkg-deb", "-x", deb, r)
		checkManPage(t, filepath.Join(r, "usr/share/man/man1/claude-auth-sync.1.gz"))
		checkCompletions(t, r)

		copyright, _ := os.ReadFile(filepath.Join(r, "usr/share/doc/claude-auth-sync/copyright"))
		if !regexp.MustCompile(`(?m)^Files: \*\nCopyright: .+\nLicense: Proprietary\n`).Match(copyright) {
			t.Errorf("the copyright file does not say the project is proprietary:\n%.600s", copyright)
		}
		// Every module compiled into the binary, with a license.
		mods := mustCmd(t, "", nil, "go", "version", "-m", filepath.Join(r, "usr/bin/claude-auth-sync"))
		n := 0
		for _, l := range strings.Split(mods, "\n") {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "dep" {
				continue
			}
			n++
			re := regexp.MustCompile(`(?m)^Files: ` + regexp.QuoteMeta(f[1]) + `/\*\nComment: Go module ` + regexp.QuoteMeta(f[1]+" "+f[2]) + `\b.*\nCopyright: .+\nLicense: (MIT|BSD-[23]-Clause|MPL-2\.0|Apache-2\.0|MIT and Apache-2\.0)\n`)
			if !re.Match(copyright) {
				t.Errorf("the copyright file does not give %s %s with a known license", f[1], f[2])
			}
		}
		if n < 5 {
			t.Errorf("go version -m lists %d modules; want the binary's dependencies", n)
		}

		zcat := exec.Command("gzip", "-dc", filepath.Join(r, "usr/share/doc/claude-auth-sync/changelog.gz"))
		changelog, err := zcat.Output()
		if err != nil {
			t.Fatalf("changelog.gz: %v", err)
		}
		if !regexp.MustCompile(`^claude-auth-sync \(` + regexp.QuoteMeta(pkgVersion) + `\) unstable; urgency=medium\n\n  \* .+\n(.*\n)*\n -- .+ <.+@.+>  \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\n$`).Match(changelog) {
			t.Errorf("changelog.gz is not a Debian changelog entry for %s:\n%s", pkgVersion, changelog)
		}
	})

	t.Run("alert rules and examples", func(t *testing.T) {
		var loki, prom struct {
			Groups []struct {
				Rules []struct {
					Alert string `yaml:"alert"`
					Expr  string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		for path, dst := range map[string]any{"packaging/alerts/loki-rules.yaml": &loki, "packaging/alerts/prometheus-rules.yaml": &prom} {
			data, _ := os.ReadFile(filepath.Join(root, path))
			if err := yaml.Unmarshal(data, dst); err != nil {
				t.Errorf("%s: %v", path, err)
			}
		}
		if len(loki.Groups) != 1 || len(loki.Groups[0].Rules) != 1 || loki.Groups[0].Rules[0].Alert != "WorkstationClaudeAuthInvalid" {
			t.Fatalf("loki rules: %+v; want the one WorkstationClaudeAuthInvalid", loki)
		}
		expr := loki.Groups[0].Rules[0].Expr
		for _, s := range []string{`identifier="claude-auth-sync"`, `unit=~`, `|= " FAIL "`, "by (host, user)"} {
			if !strings.Contains(expr, s) {
				t.Errorf("WorkstationClaudeAuthInvalid expr lacks %s:\n%s", s, expr)
			}
		}
		// The rule's regexp must pick the user out of a real journal line.
		re := regexp.MustCompile(strings.ReplaceAll(regexp.MustCompile("regexp `([^`]+)`").FindStringSubmatch(expr)[1], "?P<", "?P<"))
		if m := re.FindStringSubmatch("user=first_last-2 FAIL login expired; run `claude auth login`"); m == nil || m[1] != "first_last-2" {
			t.Errorf("the rule's regexp does not find the user: %v", m)
		}
		metrics := map[string]bool{}
		for _, g := range prom.Groups {
			for _, r := range g.Rules {
				for _, m := range regexp.MustCompile(`claude_auth_sync_[a-z_]+`).FindAllString(r.Expr, -1) {
					metrics[m] = true
				}
			}
		}
		for _, m := range []string{"claude_auth_sync_failures_total", "claude_auth_sync_last_success_timestamp_seconds",
			"claude_auth_sync_credential_expiry_timestamp_seconds", "claude_auth_sync_login_deadline_timestamp_seconds",
			"claude_auth_sync_last_backup_lag_seconds"} {
			if !metrics[m] {
				t.Errorf("no Prometheus rule uses %s", m)
			}
		}
		sh, _ := os.ReadFile(filepath.Join(root, "packaging/examples/start-claude.sh"))
		if !bytes.Contains(sh, []byte(`exec claude-auth-sync exec -- claude "$@"`)) {
			t.Errorf("start-claude.sh does not exec claude through claude-auth-sync exec")
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(root, "packaging/examples/start-claude.sh")).CombinedOutput(); err != nil {
			t.Errorf("start-claude.sh: %v %s", err, out)
		}
	})
}

// catHeredoc is a line that prints a here-document with cat (and nothing
// else): cat <<'END', cat >&2 <<END.
var catHeredoc = regexp.MustCompile(`^cat(\s+>&2)?\s+<<-?\s*'?"?(\w+)'?"?$`)

// checkUnitText: the spec's rules for units that must not break the job.
func checkUnitText(t *testing.T, root string) {
	t.Helper()
	for _, u := range append(append([]string(nil), systemUnits...), "user:claude-auth-sync.service") {
		path := filepath.Join(root, "usr/lib/systemd/system", u)
		system := true
		if name, ok := strings.CutPrefix(u, "user:"); ok {
			path, system = filepath.Join(root, "usr/lib/systemd/user", name), false
		}
		f, err := os.Open(path)
		if err != nil {
			t.Errorf("unit %s: %v", u, err)
			continue
		}
		sc := bufio.NewScanner(f)
		noCore := false
		for n := 1; sc.Scan(); n++ {
			l := strings.TrimSpace(sc.Text())
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			noCore = noCore || l == "LimitCORE=0"
			if system && strings.Contains(l, "%h") {
				t.Errorf("%s:%d: %%h in a system unit is root's home: %s", u, n, l)
			}
			if v, ok := strings.CutPrefix(l, "ReadWritePaths="); ok && system {
				for _, p := range strings.Fields(v) {
					if !strings.HasPrefix(p, "-") {
						t.Errorf("%s:%d: ReadWritePaths=%s fails the start where it does not exist; prefix it with -", u, n, p)
					}
				}
			}
			// provision and the metrics publisher run no JIT, only Go.
			if strings.HasPrefix(l, "MemoryDenyWriteExecute=") && !strings.Contains(u, "provision") && !strings.Contains(u, "metrics") {
				t.Errorf("%s:%d: MemoryDenyWriteExecute breaks the claude runtime the check runs", u, n)
			}
			if strings.HasPrefix(l, "BindPaths=") || strings.HasPrefix(l, "BindReadOnlyPaths=") {
				t.Errorf("%s:%d: bind mounts break renames (EBUSY): %s", u, n, l)
			}
		}
		f.Close()
		// Every service holds a secret in memory (a login, a Vault token,
		// provision's admin token): a core dump would write it to disk.
		if strings.HasSuffix(u, ".service") && !noCore {
			t.Errorf("%s: no LimitCORE=0; a core dump would hold its secrets", u)
		}
	}
}

// chroot is a throwaway root in which dpkg and rpm run the maintainer scripts:
// a shell, rm, rmdir, cat, /dev/null, and a systemctl that records its arguments.
type chroot struct {
	t   *testing.T
	dir string
}

func newChroot(t *testing.T, systemdRunning bool) *chroot {
	t.Helper()
	r := &chroot{t: t, dir: t.TempDir()}
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "usr/bin", "tmp", "etc", "dev"} {
		os.MkdirAll(filepath.Join(r.dir, d), 0o755)
	}
	if systemdRunning {
		os.MkdirAll(filepath.Join(r.dir, "run/systemd/system"), 0o755)
	}
	os.WriteFile(filepath.Join(r.dir, "var/lib/dpkg/status"), nil, 0o644)
	os.WriteFile(filepath.Join(r.dir, "var/lib/dpkg/available"), nil, 0o644)
	os.Symlink("usr/bin", filepath.Join(r.dir, "bin"))
	for _, bin := range []string{"/usr/bin/dash", "/usr/bin/rm", "/usr/bin/rmdir", "/usr/bin/cat"} {
		copyWithLibs(t, bin, r.dir)
	}
	os.Symlink("dash", filepath.Join(r.dir, "usr/bin/sh"))
	os.WriteFile(filepath.Join(r.dir, "usr/bin/systemctl"), []byte("#!/bin/sh\necho \"$*\" >> /tmp/systemctl.calls\n"), 0o755)
	if out, err := exec.Command("mknod", "-m", "666", filepath.Join(r.dir, "dev/null"), "c", "1", "3").CombinedOutput(); err != nil {
		t.Fatalf("mknod /dev/null in the chroot: %v %s", err, out)
	}
	return r
}

// calls returns and clears the recorded systemctl calls.
func (r *chroot) calls() []string {
	p := filepath.Join(r.dir, "tmp/systemctl.calls")
	data, _ := os.ReadFile(p)
	os.Remove(p)
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func copyWithLibs(t *testing.T, bin, root string) {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	files := []string{bin}
	files = append(files, regexp.MustCompile(`(/\S+)`).FindAllString(string(out), -1)...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("copy %s into the chroot: %v", f, err)
		}
		dst := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// checkManPage: man renders the page with no warning, and it has the
// sections a man page should.
func checkManPage(t *testing.T, page string) {
	t.Helper()
	cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=0", "MANPAGER=cat", "PAGER=cat")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || errb.Len() > 0 {
		t.Errorf("man -l %s: %v\n%s", page, err, errb.String())
	}
	text := regexp.MustCompile(".\b").ReplaceAllString(out.String(), "") // no overstrike
	for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "FILES", "ENVIRONMENT", "SEE ALSO"} {
		if !regexp.MustCompile(`(?m)^` + s + `$`).MatchString(text) {
			t.Errorf("the man page has no %s section", s)
		}
	}
	for _, s := range []string{"claude-auth-sync status [--json] [flags]", "--check-timeout DURATION", "CLAUDE_AUTH_CHECK_SPREAD", "/etc/claude-auth-sync/config"} {
		if !strings.Contains(text, s) {
			t.Errorf("the rendered man page lacks %q", s)
		}
	}
	if strings.Contains(text, "agent-child DURATION") || strings.Contains(text, "--agent-child\n") {
		t.Errorf("the man page shows the internal --agent-child flag")
	}
}

// checkCompletions: the scripts parse, and bash completes a command and a
// flag the way a user would see it.
func checkCompletions(t *testing.T, root string) {
	t.Helper()
	bash := filepath.Join(root, "usr/share/bash-completion/completions/claude-auth-sync")
	if out, err := exec.Command("bash", "-n", bash).CombinedOutput(); err != nil {
		t.Errorf("bash -n %s: %v\n%s", bash, err, out)
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"claude-auth-sync", "st"}, "status"},
		{[]string{"claude-auth-sync", "status", "--js"}, "--json"},
		{[]string{"claude-auth-sync", "--verbose", "re"}, "refresh restore"},
		{[]string{"claude-auth-sync", "--config", "/etc/x", "sy"}, "sync"},
		{[]string{"claude-auth-sync", "--store", ""}, "auto vault file"},
		{[]string{"claude-auth-sync", "refresh", "--ag"}, ""}, // internal
	} {
		script := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _claude_auth_sync; echo "${COMPREPLY[*]}"`
		out, err := exec.Command("bash", append([]string{"-c", script, "bash", bash}, tc.words...)...).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Errorf("bash completion of %q = %q (%v); want %q", strings.Join(tc.words, " "), got, err, tc.want)
		}
	}
	for _, sh := range []struct{ shell, path string }{
		{"zsh", "usr/share/zsh/vendor-completions/_claude-auth-sync"},
		{"fish", "usr/share/fish/vendor_completions.d/claude-auth-sync.fish"},
	} {
		data, err := os.ReadFile(filepath.Join(root, sh.path))
		if err != nil || !bytes.Contains(data, []byte("status")) {
			t.Errorf("%s completion: %v; want a script that knows status", sh.shell, err)
		}
		if _, err := exec.LookPath(sh.shell); err != nil {
			t.Logf("%s is not installed: its completion is not parsed", sh.shell)
			continue
		}
		if out, err := exec.Command(sh.shell, "-n", filepath.Join(root, sh.path)).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", sh.shell, sh.path, err, out)
		}
	}
}
