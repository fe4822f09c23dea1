// Package nspawn boots a real systemd as PID 1 in a systemd-nspawn container
// and runs commands inside it, so tests can prove units, packages, timers,
// the watchdog and the journal where users run them.
//
// There is no host systemd or D-Bus on the machines this runs on, hence
// --register=no --keep-unit, and commands enter the container with nsenter
// instead of machinectl. The container shares the host's network namespace,
// so servers a test starts on 127.0.0.1 are reachable from inside. Its root is
// a directory on the host: a test can read and write the container's files
// directly (uids are the same numbers inside and out; /tmp inside is a tmpfs
// and is not visible from the host).
package nspawn

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tree returns the cached Debian tree (e2e/systemd/ensure-tree.sh builds it
// once, ~2 min).
func Tree() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "systemd", "ensure-tree.sh")
	var stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ensure-tree.sh: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// Available says why containers cannot run here ("" when they can).
func Available() string {
	if os.Geteuid() != 0 {
		return "booting a container needs root"
	}
	for _, tool := range []string{"systemd-nspawn", "nsenter", "debootstrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is missing (apt-get install -y systemd-container debootstrap util-linux)"
		}
	}
	return ""
}

// Bind is a host path made visible inside the container.
type Bind struct {
	Host, Container string
	ReadOnly        bool
}

// Options shape one container.
type Options struct {
	Name  string // machine name (also the hostname)
	Binds []Bind
	// Setup runs on the copied tree before boot (write files, users' homes).
	Setup func(root string) error
}

// Container is one booted copy of the tree.
type Container struct {
	Name      string
	Root      string // the container's / on the host
	MachineID string
	BootTime  time.Duration // from nspawn's start to "running"
	cmd       *exec.Cmd
	done      chan error
	pid1      int
	logPath   string
}

// Boot copies tree into dir/root, gives it its own machine-id and boots it,
// returning once systemd says the system is up (running or degraded).
func Boot(ctx context.Context, tree, dir string, opt Options) (*Container, error) {
	if why := Available(); why != "" {
		return nil, errors.New(why)
	}
	root := filepath.Join(dir, "root")
	if out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", tree, root).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy the tree: %v: %s", err, out)
	}
	os.Remove(filepath.Join(root, ".complete"))
	var id [16]byte
	_, _ = rand.Read(id[:])
	c := &Container{Name: opt.Name, Root: root, MachineID: hex.EncodeToString(id[:]), logPath: filepath.Join(dir, "nspawn.log")}
	if err := os.WriteFile(filepath.Join(root, "etc", "machine-id"), []byte(c.MachineID+"\n"), 0o444); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte(opt.Name+"\n"), 0o644); err != nil {
		return nil, err
	}
	if opt.Setup != nil {
		if err := opt.Setup(root); err != nil {
			return nil, fmt.Errorf("set the tree up: %w", err)
		}
	}
	args := []string{"-D", root, "-b", "--register=no", "--keep-unit", "--machine=" + opt.Name, "--console=passive"}
	for _, b := range opt.Binds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		args = append(args, flag+b.Host+":"+b.Container)
	}
	logf, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c.cmd = exec.Command("systemd-nspawn", args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// nspawn stops the container (a clean poweroff) on SIGTERM; if the test
	// process dies, the kernel sends it that.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("systemd-nspawn: %w", err)
	}
	c.done = make(chan error, 1)
	go func() { c.done <- c.cmd.Wait() }()
	if err := c.waitBoot(ctx); err != nil {
		c.Stop()
		return nil, fmt.Errorf("boot %s: %w\n%s", opt.Name, err, c.Log())
	}
	c.BootTime = time.Since(start)
	return c, nil
}

// Log is nspawn's own output (boot errors).
func (c *Container) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

func (c *Container) waitBoot(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 180*time.Second) // a loaded 2-core machine has taken over 90 s
	defer cancel()
	for c.pid1 == 0 {
		select {
		case err := <-c.done:
			return fmt.Errorf("systemd-nspawn exited: %v", err)
		case <-ctx.Done():
			return errors.New("no systemd process appeared in the container")
		case <-time.After(50 * time.Millisecond):
		}
		c.pid1 = findInit(c.cmd.Process.Pid)
	}
	last := "(no answer)"
	for {
		// Each ask is bounded: one that hangs (seen once in CI: a container
		// at graphical.target whose systemctl never answered) is asked again.
		actx, acancel := context.WithTimeout(ctx, 15*time.Second)
		out, err := c.Exec(actx, "systemctl", "is-system-running", "--wait")
		acancel()
		s := strings.TrimSpace(string(out))
		if s == "" && err != nil {
			s = err.Error()
		}
		last = s
		switch s {
		case "running", "degraded":
			return nil
		case "stopping", "maintenance":
			return fmt.Errorf("system state %q", s)
		default:
			// starting, initializing, or no manager to ask yet ("Failed to
			// connect to bus", or "offline": systemctl could not reach
			// PID 1, which on a loaded machine has not made its socket).
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("systemd did not reach running (last answer: %q)", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// findInit finds the container's PID 1: the systemd process below nspawn.
func findInit(nspawn int) int {
	parent := map[int]int{}
	comm := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if l < 0 || r < l {
			continue
		}
		f := strings.Fields(s[r+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[pid], comm[pid] = pp, s[l+1:r]
	}
	for pid, name := range comm {
		if name != "systemd" {
			continue
		}
		// A child or grandchild of nspawn.
		if p := parent[pid]; p == nspawn || parent[p] == nspawn {
			return pid
		}
	}
	return 0
}

// PID1 is the container's init as seen from the host.
func (c *Container) PID1() int { return c.pid1 }

// Command is a command that runs inside the container as root with a clean
// environment (plus env, which ends up in argv: never a secret there).
func (c *Container) Command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	full := []string{"-t", strconv.Itoa(c.pid1), "-a", "--", "env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"}
	full = append(full, env...)
	full = append(full, args...)
	return exec.CommandContext(ctx, "nsenter", full...)
}

// Exec runs a command inside as root and returns its combined output.
func (c *Container) Exec(ctx context.Context, args ...string) ([]byte, error) {
	cmd := c.Command(ctx, nil, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// UserCommand runs args as user through runuser, with the environment a
// login would have for talking to that user's manager.
func (c *Container) UserCommand(ctx context.Context, user string, uid int, args ...string) *exec.Cmd {
	full := []string{"runuser", "-u", user, "--", "env", "XDG_RUNTIME_DIR=/run/user/" + strconv.Itoa(uid),
		"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/" + strconv.Itoa(uid) + "/bus", "USER=" + user}
	full = append(full, args...)
	return c.Command(ctx, nil, full...)
}

// Stop powers the container off (cleanly when it can) and waits for nspawn.
func (c *Container) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}
