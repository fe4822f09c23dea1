package session

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Isolate refuses what Go would hand over as it is (a file: maybe root's
// terminal) and starts the child without a controlling terminal.
func TestIsolate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*exec.Cmd)
	}{
		{"stdin a file", func(c *exec.Cmd) { c.Stdin = os.Stdin }},
		{"stdout a file", func(c *exec.Cmd) { c.Stdout = os.Stdout }},
		{"stderr a file", func(c *exec.Cmd) { c.Stderr = os.Stderr }},
		{"extra files", func(c *exec.Cmd) { c.ExtraFiles = []*os.File{os.Stdin} }},
	} {
		cmd := exec.Command("true")
		tc.mod(cmd)
		if err := Isolate(cmd); err == nil {
			t.Errorf("Isolate with %s: no error", tc.name)
		}
	}
	// In a session of its own: /dev/tty does not open (ENXIO).
	cmd := exec.Command("sh", "-c", `if (exec 3<>/dev/tty) 2>/dev/null; then echo tty; else echo none; fi; cat /proc/$$/stat`)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := Isolate(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(out.String(), "\n", 2)
	f := strings.Fields(lines[1])
	if lines[0] != "none" || len(f) < 6 || f[0] != f[5] {
		t.Errorf("isolated child: /dev/tty %s, stat %q; want none and a session of its own", lines[0], lines[1])
	}
}
