package lock

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// AgentLock is what makes the agent the only one of its user: the flock on
// agent.lock in the state dir, and a listening socket in the abstract unix
// namespace, which no path names: deleting the state dir (a user cleaning
// up, a home restored from a backup) cannot take it away, and it dies with
// the process.
//
// The socket's name is @claude-auth-sync/agent/<uid>/<key hash>/<random>.
// Any user may bind any abstract name, so a name alone proves nothing: an
// agent is recognised by the kernel's word on who listens (SO_PEERCRED), never
// by its name, and the random part leaves a squatter no name to take first.
// A starting agent holds the flock, then looks for a listener of its own uid
// under its prefix (in /proc/net/unix), and only then listens itself. The
// flock orders the agents that find the same state dir; the socket, one
// started after the state dir was deleted.
type AgentLock struct {
	file *Flock
	ln   *net.UnixListener
	done chan struct{}
}

// agentNamespace starts every agent's socket name.
const agentNamespace = "@claude-auth-sync/agent/"

// unixTable lists the unix sockets of our network namespace.
const unixTable = "/proc/net/unix"

// TryAgent takes the agent lock in dir for key (the user and host the agent
// looks after) without waiting: ErrHeld, naming the holder's pid, when
// another agent of this uid holds either part.
func TryAgent(dir, key string) (*AgentLock, error) {
	fl, err := Try(dir, Agent)
	if err != nil {
		return nil, err
	}
	prefix := agentPrefix(os.Getuid(), key)
	if pid, found := findAgent(prefix, os.Getuid()); found {
		fl.Unlock()
		if pid > 0 {
			return nil, fmt.Errorf("%w (%s, pid %d)", ErrHeld, Agent, pid)
		}
		return nil, fmt.Errorf("%w (%s)", ErrHeld, Agent)
	}
	ln, err := listenAgent(prefix)
	if err != nil {
		fl.Unlock()
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	l := &AgentLock{file: fl, ln: ln, done: make(chan struct{})}
	go l.serve()
	return l, nil
}

// Unlock releases both parts. Safe to call more than once.
func (l *AgentLock) Unlock() {
	if l == nil || l.ln == nil {
		return
	}
	_ = l.ln.Close()
	<-l.done
	l.ln = nil
	l.file.Unlock()
}

// serve accepts and closes at once: a connection's only use is the
// credentials the kernel hands the caller.
func (l *AgentLock) serve() {
	defer close(l.done)
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // out of descriptors: try again
			continue
		}
		c.Close()
	}
}

func agentPrefix(uid int, key string) string {
	sum := sha256.Sum256([]byte(key))
	return agentNamespace + strconv.Itoa(uid) + "/" + hex.EncodeToString(sum[:8]) + "/"
}

// listenAgent listens on prefix and a random name.
func listenAgent(prefix string) (*net.UnixListener, error) {
	for {
		var r [8]byte
		_, _ = rand.Read(r[:])
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: prefix + hex.EncodeToString(r[:]), Net: "unix"})
		if errors.Is(err, syscall.EADDRINUSE) {
			continue // taken: another random name
		}
		return ln, err
	}
}

// AgentRunning says whether an agent of uid for key listens (its pid, 0 when
// it is in another pid namespace), whatever became of its state dir: what
// `status` asks when the flock in the state dir says nothing.
func AgentRunning(uid int, key string) (pid int, found bool) {
	return findAgent(agentPrefix(uid, key), uid)
}

// findAgent looks for a socket under prefix that a process of uid listens
// on, and gives its pid (0 when it is in another pid namespace). A table it
// cannot read finds nothing: the flock is then the only guard.
func findAgent(prefix string, uid int) (pid int, found bool) {
	b, err := os.ReadFile(unixTable)
	if err != nil {
		return 0, false
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path: a listening
		// socket has __SO_ACCEPTCON (0x10000) in its flags.
		f := strings.Fields(line)
		if len(f) < 8 || f[3] != "00010000" {
			continue
		}
		name := f[len(f)-1]
		if !strings.HasPrefix(name, prefix) || seen[name] {
			continue
		}
		seen[name] = true
		if pid, ok := ownListener(name, uid); ok {
			return pid, true
		}
	}
	return 0, false
}

// ownListener says whether a process of uid listens on name, by the
// credentials the kernel gives for it.
func ownListener(name string, uid int) (int, bool) {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.Dial("unix", name)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return 0, false
	}
	if int(cred.Uid) != uid {
		return 0, false
	}
	return int(cred.Pid), true
}
