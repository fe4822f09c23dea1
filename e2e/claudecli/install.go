// Package claudecli lets tests drive the real Claude Code CLI, as published on
// the npm registry, against the local fake Anthropic (e2e/fakeanthropic):
// Install fetches a pinned version into a cache outside the repository, StartProxy
// runs a TLS-intercepting CONNECT proxy that serves the fake under Anthropic's
// real host names, and Env builds a hermetic environment for running the CLI.
//
// Two package shapes exist. Older 2.1.x releases (2.1.80 and before) are a
// cli.js run by the machine's Node. Newer ones (2.1.124, 2.1.332, ...) are a
// Bun-compiled native binary shipped in the optional dependency
// @anthropic-ai/claude-code-linux-x64 (or -musl), which the wrapper package's
// postinstall copies over bin/claude.exe.
package claudecli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/gofrs/flock"
)

// Package is the npm package that holds the CLI.
const Package = "@anthropic-ai/claude-code"

var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)

// CacheDir is where installs are kept: $CLAUDE_AUTH_SYNC_CACHE, else
// $XDG_CACHE_HOME/claude-auth-sync, else ~/.cache/claude-auth-sync (the same
// place e2e/vault/ensure-vault.sh uses).
func CacheDir() (string, error) {
	if d := os.Getenv("CLAUDE_AUTH_SYNC_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "claude-auth-sync"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("claudecli: no cache dir: %w", err)
	}
	return filepath.Join(home, ".cache", "claude-auth-sync"), nil
}

// Dir is the install directory of a version: CacheDir()/claude-code-VERSION.
func Dir(version string) (string, error) {
	c, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(c, "claude-code-"+version), nil
}

// Install makes sure @anthropic-ai/claude-code@version is installed in the
// cache and returns the path of an executable `claude` (DIR/claude: a symlink
// to the native binary, or a small script running cli.js with the machine's
// node). A warm call only checks the files. Concurrent callers, in this process
// or others (ensure-claude.sh too), serialise on a flock and install once; an
// install is built in a temporary directory and renamed into place, so a
// half-finished one is never seen.
func Install(version string) (string, error) {
	if !versionRE.MatchString(version) {
		return "", fmt.Errorf("claudecli: bad version %q (want e.g. 2.1.332)", version)
	}
	dir, err := Dir(version)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "claude")
	if ok(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("claudecli: %w", err)
	}
	lk := flock.New(filepath.Join(filepath.Dir(dir), ".claude-code-"+version+".lock"))
	if err := lk.Lock(); err != nil {
		return "", fmt.Errorf("claudecli: lock: %w", err)
	}
	defer func() { _ = lk.Unlock() }()
	if ok(bin) {
		return bin, nil
	}

	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("claudecli: npm not found (needed to install %s@%s): %w", Package, version, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".claude-code-"+version+".tmp-")
	if err != nil {
		return "", fmt.Errorf("claudecli: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(npm, "install", "--prefix", tmp, "--no-audit", "--no-fund",
		"--no-save", "--loglevel=error", Package+"@"+version)
	cmd.Dir = tmp
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("claudecli: npm install %s@%s: %v\n%s", Package, version, err, out.String())
	}
	if err := link(tmp); err != nil {
		return "", fmt.Errorf("claudecli: %s@%s: %w\nnpm said:\n%s", Package, version, err, out.String())
	}
	_ = os.RemoveAll(dir) // a broken earlier install, if any
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("claudecli: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("claudecli: %w", err)
	}
	if !ok(bin) {
		return "", fmt.Errorf("claudecli: %s is not executable after install", bin)
	}
	return bin, nil
}

// ok tells whether bin exists, is executable and (through symlinks) reaches a
// regular file.
func ok(bin string) bool {
	st, err := os.Stat(bin)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// isELF tells whether path is a native executable (not the placeholder stub the
// wrapper package ships before its postinstall runs).
func isELF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.Read(b[:]); err != nil {
		return false
	}
	return bytes.Equal(b[:], []byte("\x7fELF"))
}

// platformPackages lists the native packages that may hold this machine's
// binary, most likely first.
func platformPackages() []string {
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" {
		return nil
	}
	return []string{Package + "-linux-" + arch, Package + "-linux-" + arch + "-musl"}
}

// link creates root/claude for an npm prefix root: a relative symlink to the
// native binary, or a script running cli.js with node.
func link(root string) error {
	nm := filepath.Join(root, "node_modules")
	pkg := filepath.Join(nm, filepath.FromSlash(Package))
	cands := []string{filepath.Join(pkg, "bin", "claude.exe")}
	for _, p := range platformPackages() {
		cands = append(cands, filepath.Join(nm, filepath.FromSlash(p), "claude"))
	}
	for _, c := range cands {
		if isELF(c) {
			_ = os.Chmod(c, 0o755)
			rel, err := filepath.Rel(root, c)
			if err != nil {
				return err
			}
			return os.Symlink(rel, filepath.Join(root, "claude"))
		}
	}
	cli := filepath.Join(pkg, "cli.js")
	if _, err := os.Stat(cli); err == nil {
		node, err := exec.LookPath("node")
		if err != nil {
			return fmt.Errorf("this version is a cli.js and needs node: %w", err)
		}
		if node, err = filepath.Abs(node); err != nil {
			return err
		}
		script := "#!/bin/sh\n# Runs Claude Code's cli.js with the node found at install time.\n" +
			"here=$(dirname \"$(readlink -f \"$0\")\")\n" +
			"exec " + shellQuote(node) + " \"$here/node_modules/" + Package + "/cli.js\" \"$@\"\n"
		return os.WriteFile(filepath.Join(root, "claude"), []byte(script), 0o755)
	}
	return errors.New("the package has neither a native binary for " + runtime.GOOS + "/" + runtime.GOARCH +
		" (" + strings.Join(platformPackages(), ", ") + ") nor a cli.js")
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
