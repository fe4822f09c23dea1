// Package session keeps root's terminal and descriptors away from the code a
// user controls when root acts for that user (--user): the children it
// starts get a session of their own with no controlling terminal and pipes
// for their output, `exec --user` lets go of the terminal before it becomes
// the user's command, and no descriptor root's caller left open reaches
// either. A program holding a terminal can push keystrokes into it
// (TIOCSTI), which the shell then runs as root.
package session

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Isolate makes cmd start in a new session (setsid: no controlling
// terminal; a process group of its own, so -pid signals all of it). Its
// standard streams must be nil (/dev/null) or buffers and writers, which Go
// connects through pipes: an *os.File would be handed over as it is, and
// that may be root's terminal. No ExtraFiles either.
func Isolate(cmd *exec.Cmd) error {
	for _, s := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		if _, ok := s.(*os.File); ok {
			return fmt.Errorf("%s: a file as a standard stream of a child started for another user (only pipes)", cmd.Path)
		}
	}
	if len(cmd.ExtraFiles) > 0 {
		return fmt.Errorf("%s: descriptors passed to a child started for another user", cmd.Path)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setpgid = false // setsid made the group; setpgid after it fails
	cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Foreground, cmd.SysProcAttr.Noctty = false, false, false
	return nil
}

// CloseOnExec marks every descriptor above stderr close-on-exec. Go opens
// its own that way, but one the caller left open without the flag (a
// shell's `exec 3<secret`, a leaked socket) would otherwise pass into every
// child and into the command exec becomes.
func CloseOnExec() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	// Kernels before 5.11: one by one.
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list open descriptors: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("list open descriptors: %w", err)
	}
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd <= 2 {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("descriptor %d: %w", fd, err)
		}
	}
	return nil
}

// Terminal says whether fd is a terminal.
func Terminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// ErrTerminal: the process still has a controlling terminal it cannot drop.
var ErrTerminal = errors.New("cannot let go of the controlling terminal")

// DetachTerminal lets go of the controlling terminal, if any: a new session
// (setsid), or, for a process group leader, which may not start one,
// TIOCNOTTY on /dev/tty. Then /dev/tty must not open any more (ENXIO):
// anything else is ErrTerminal.
func DetachTerminal() error {
	if _, err := unix.Setsid(); err != nil {
		if tty, err := os.OpenFile("/dev/tty", os.O_RDWR|syscall.O_NOCTTY, 0); err == nil {
			// A session leader letting go hangs its foreground group up,
			// which may be this process: not a reason to die.
			signal.Ignore(syscall.SIGHUP)
			_ = unix.IoctlSetInt(int(tty.Fd()), unix.TIOCNOTTY, 0)
			signal.Reset(syscall.SIGHUP)
			tty.Close()
		}
	}
	return HasNoTerminal()
}

// HasNoTerminal is nil when this process has no controlling terminal
// (/dev/tty fails with ENXIO, or there is no /dev/tty), else ErrTerminal.
func HasNoTerminal() error {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err == nil {
		tty.Close()
		return ErrTerminal
	}
	if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENOENT) { // no /dev/tty: none to reach
		return nil
	}
	return fmt.Errorf("%w: /dev/tty: %v", ErrTerminal, err)
}
