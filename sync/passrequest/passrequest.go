// Package passrequest is how `claude-auth-sync sync` (the unit
// claude-auth-sync@<user>.service, the reference's "sync now") asks the user's
// running agent for a full pass and waits for its outcome, so one process acts
// per user and the agent's state stays its own.
//
// The channel is a unix socket, agent.sock, in the user's state dir. That
// directory must be the user's own and closed to everyone else (0700); the
// socket is 0600, and each side checks the other's uid (SO_PEERCRED): the
// agent answers only its own uid, and the requester trusts only an agent of
// its own uid. Every read and write has a deadline; a socket nobody listens on
// (an agent killed with -9) reads as "no agent", and the agent, which holds
// the user's agent lock, replaces it when it starts.
package passrequest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SocketName is the socket's name in the state dir.
const SocketName = "agent.sock"

// Kind is who asked for the pass.
type Kind string

const (
	// Full: a person (`systemctl start claude-auth-sync@<user>.service`,
	// `claude-auth-sync sync`): the whole pass, the inference check included.
	Full Kind = "full"
	// Scheduled: the six-hourly timer. The agent runs its own check every
	// interval, so it skips the check when it checked within the interval
	// (it still reads Vault and applies setup-token changes).
	Scheduled Kind = "scheduled"
)

// Request is what the requester sends: one JSON line.
type Request struct {
	Kind Kind `json:"kind"`
}

// Answer is how the agent's pass ended: one JSON line, never a secret (the
// message is the pass's masked outcome line).
type Answer struct {
	Status  string `json:"status,omitempty"`
	Code    int    `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	PID     int    `json:"pid,omitempty"`
	// Refused is set instead when the agent would not run the pass.
	Refused string `json:"refused,omitempty"`
}

// ErrNoAgent: no agent listens for this user (no socket, or a stale one).
var ErrNoAgent = errors.New("no agent is running for this user")

// handshake bounds the request's read and the answer's write: both are one
// short line between two processes of one user.
const handshake = 5 * time.Second

// checkDir refuses a state dir that is not this uid's own private directory:
// anyone else who could write there could put their socket in the agent's
// place or read what passes through it.
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case !ok || int(st.Uid) != os.Getuid():
		return fmt.Errorf("%s is not owned by uid %d", dir, os.Getuid())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%s is open to other users (mode %04o); want 0700", dir, fi.Mode().Perm())
	}
	return nil
}

// socketPath is the path to bind or dial. A unix socket's path holds at most
// 107 bytes; a longer one (a deep home) is reached through an open descriptor
// of the directory, which the caller closes when done.
func socketPath(dir string) (string, func(), error) {
	p := filepath.Join(dir, SocketName)
	if len(p) < 100 {
		return p, func() {}, nil
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, SocketName), func() { syscall.Close(fd) }, nil
}

// peerUID is the uid of the process at the other end of c.
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, serr
	}
	return int(cred.Uid), nil
}

// Listener is the agent's end.
type Listener struct {
	ln   *net.UnixListener
	path string
}

// Listen makes the socket in dir. The caller holds the user's agent lock, so
// a socket already there is a dead agent's: it is removed first.
func Listen(dir string) (*Listener, error) {
	if err := checkDir(dir); err != nil {
		return nil, fmt.Errorf("pass requests: %w", err)
	}
	path, done, err := socketPath(dir)
	if err != nil {
		return nil, fmt.Errorf("pass requests: %w", err)
	}
	defer done()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("pass requests: remove the old socket: %w", err)
	}
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("pass requests: %w", err)
	}
	// Close leaves the file: the next agent removes it (it holds the lock,
	// this one may not by then).
	ln.SetUnlinkOnClose(false)
	return &Listener{ln: ln, path: filepath.Join(dir, SocketName)}, nil
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// Serve answers requests until ctx ends: each connection of this uid gets one
// pass from run (which may take minutes; it returns early when ctx ends);
// refused says who else knocked (once per connection, no secret in it).
func (l *Listener) Serve(ctx context.Context, run func(context.Context, Kind) Answer, refused func(uid int, why string)) error {
	stop := context.AfterFunc(ctx, func() { l.ln.Close() })
	defer stop()
	defer l.ln.Close()
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("pass requests: %w", err)
		}
		go l.answer(ctx, c, run, refused)
	}
}

func (l *Listener) answer(ctx context.Context, c *net.UnixConn, run func(context.Context, Kind) Answer, refused func(int, string)) {
	defer c.Close()
	reply := func(a Answer) {
		_ = c.SetWriteDeadline(time.Now().Add(handshake))
		b, _ := json.Marshal(a)
		_, _ = c.Write(append(b, '\n'))
	}
	uid, err := peerUID(c)
	if err != nil || uid != os.Getuid() {
		why := "another user may not ask this agent for a pass"
		if err != nil {
			why = "cannot tell who is asking: " + err.Error()
		}
		refused(uid, why)
		reply(Answer{Refused: why})
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(handshake))
	line, err := bufio.NewReaderSize(c, 256).ReadSlice('\n')
	var req Request
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err == nil && req.Kind != Full && req.Kind != Scheduled {
		err = fmt.Errorf("unknown kind %q", req.Kind)
	}
	if err != nil {
		reply(Answer{Refused: "a bad request: " + err.Error()})
		return
	}
	// The requester going away does not stop the pass: it is the agent's.
	a := run(ctx, req.Kind)
	a.PID = os.Getpid()
	reply(a)
}

// Ask asks the agent listening in dir for a pass of kind and waits for its
// answer until ctx ends. ErrNoAgent: no agent listens (the caller runs the
// pass itself).
func Ask(ctx context.Context, dir string, kind Kind) (Answer, error) {
	if _, err := os.Lstat(filepath.Join(dir, SocketName)); errors.Is(err, os.ErrNotExist) {
		return Answer{}, ErrNoAgent
	}
	if err := checkDir(dir); err != nil {
		return Answer{}, fmt.Errorf("ask the agent: %w", err)
	}
	path, done, err := socketPath(dir)
	if err != nil {
		return Answer{}, fmt.Errorf("ask the agent: %w", err)
	}
	d := net.Dialer{Timeout: handshake}
	nc, err := d.DialContext(ctx, "unix", path)
	done()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return Answer{}, ErrNoAgent
		}
		return Answer{}, fmt.Errorf("ask the agent: %w", err)
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	if uid, err := peerUID(c); err != nil || uid != os.Getuid() {
		return Answer{}, fmt.Errorf("ask the agent: %s is not this user's agent (uid %d)", filepath.Join(dir, SocketName), uid)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	_ = c.SetWriteDeadline(time.Now().Add(handshake))
	b, _ := json.Marshal(Request{Kind: kind})
	if _, err := c.Write(append(b, '\n')); err != nil {
		return Answer{}, fmt.Errorf("ask the agent: %w", err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	line, err := bufio.NewReaderSize(c, 64<<10).ReadSlice('\n')
	if err != nil {
		if ctx.Err() != nil {
			return Answer{}, fmt.Errorf("ask the agent: gave up waiting: %w", ctx.Err())
		}
		return Answer{}, fmt.Errorf("ask the agent: no answer: %w", err)
	}
	var a Answer
	if err := json.Unmarshal(line, &a); err != nil {
		return Answer{}, fmt.Errorf("ask the agent: a bad answer: %w", err)
	}
	if a.Refused != "" {
		return a, fmt.Errorf("ask the agent: refused: %s", a.Refused)
	}
	return a, nil
}
