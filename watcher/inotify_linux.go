package watcher

import (
	"encoding/binary"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// inotify is one inotify instance read by its own goroutine. The descriptor is
// non-blocking and in the runtime's poller: a read waits without a thread, and
// close ends it.
type inotify struct {
	f    *os.File
	evs  chan []event
	done chan struct{}
	rerr error // why reading stopped; written before evs is closed
}

// watchMask is what the directory's watch asks for: every way its children
// (the credentials file among them) are made, written, closed after writing,
// changed in mode, removed or renamed, and the directory itself going away.
const watchMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MODIFY | unix.IN_CLOSE_WRITE |
	unix.IN_ATTRIB | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

func openInotify() (source, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	s := &inotify{f: os.NewFile(uintptr(fd), "inotify"), evs: make(chan []event), done: make(chan struct{})}
	go s.read()
	return s, nil
}

// control runs fn on the descriptor while it is sure to be open.
func (s *inotify) control(fn func(fd int) error) error {
	rc, err := s.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (s *inotify) add(path string) (int32, error) {
	var wd int
	err := s.control(func(fd int) (err error) {
		wd, err = unix.InotifyAddWatch(fd, path, watchMask)
		return err
	})
	return int32(wd), err
}

func (s *inotify) remove(wd int32) {
	_ = s.control(func(fd int) error {
		_, err := unix.InotifyRmWatch(fd, uint32(wd))
		return err
	})
}

func (s *inotify) events() <-chan []event { return s.evs }

func (s *inotify) err() error { return s.rerr }

func (s *inotify) close() {
	close(s.done)
	_ = s.f.Close()
}

func (s *inotify) read() {
	defer close(s.evs)
	// Room for many events at once; one needs at most a header and NAME_MAX+1.
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := s.f.Read(buf)
		if err != nil {
			select {
			case <-s.done: // closed by us
			default:
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				s.rerr = err
			}
			return
		}
		select {
		case s.evs <- parse(buf[:n]):
		case <-s.done:
			return
		}
	}
}

// parse splits what one read returned into events.
func parse(b []byte) []event {
	var evs []event
	for len(b) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(b[0:]))
		mask := binary.NativeEndian.Uint32(b[4:])
		n := int(binary.NativeEndian.Uint32(b[12:]))
		b = b[unix.SizeofInotifyEvent:]
		if n > len(b) {
			break // cannot happen: the kernel returns whole events
		}
		name := b[:n]
		b = b[n:]
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		evs = append(evs, event{wd: wd, op: opOf(mask), name: string(name)})
	}
	return evs
}

func opOf(mask uint32) op {
	var o op
	for _, m := range [...]struct {
		in uint32
		op op
	}{
		{unix.IN_CREATE, opCreate},
		{unix.IN_MOVED_TO, opMovedTo},
		{unix.IN_MODIFY, opModify},
		{unix.IN_CLOSE_WRITE, opCloseWrite},
		{unix.IN_ATTRIB, opAttrib},
		{unix.IN_DELETE, opDelete},
		{unix.IN_MOVED_FROM, opMovedFrom},
		{unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_IGNORED | unix.IN_UNMOUNT, opSelfGone},
		{unix.IN_Q_OVERFLOW, opOverflow},
	} {
		if mask&m.in != 0 {
			o |= m.op
		}
	}
	return o
}
