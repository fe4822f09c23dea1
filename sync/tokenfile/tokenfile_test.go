package tokenfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const token = "hvs.CAESItokenTOKENtokenTOKEN0123456789"

// nobody is the uid a file of someone else's gets (root only can chown).
const nobody = 65534

func TestRead(t *testing.T) {
	me := os.Geteuid()
	dir := t.TempDir()
	file := func(name, body string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good", token+"\n", 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		path   string
		uid    int
		root   bool // needs root (chown)
		want   string
		kind   error
		errHas string
	}{
		{name: "one line", path: good, uid: me, want: token},
		{name: "no newline, 0400", path: file("ro", token, 0o400), uid: me, want: token},
		{name: "blanks around", path: file("blanks", "\n  "+token+"  \r\n\n", 0o600), uid: me, want: token},
		{name: "missing", path: filepath.Join(dir, "missing"), uid: me, kind: fs.ErrNotExist, errHas: "does not exist"},
		{name: "a symlink to a good file", path: link, uid: me, kind: ErrUnsafe, errHas: "is a symlink"},
		{name: "a FIFO", path: fifo, uid: me, kind: ErrUnsafe, errHas: "not a regular file"},
		{name: "a directory", path: sub, uid: me, kind: ErrUnsafe, errHas: "not a regular file"},
		{name: "mode 0644", path: file("0644", token+"\n", 0o644), uid: me, kind: ErrUnsafe, errHas: "mode 0644, readable by others"},
		{name: "mode 0640", path: file("0640", token+"\n", 0o640), uid: me, kind: ErrUnsafe, errHas: "mode 0640"},
		{name: "mode 0604", path: file("0604", token+"\n", 0o604), uid: me, kind: ErrUnsafe, errHas: "chmod 600"},
		{name: "another uid's", path: file("theirs", token+"\n", 0o600), uid: me, root: true, kind: ErrUnsafe, errHas: "is owned by uid 65534, not by you"},
		{name: "another uid's, asked for that uid", path: file("theirs-ok", token+"\n", 0o600), uid: nobody, root: true, want: token},
		{name: "mine, asked for another uid", path: good, uid: nobody, kind: ErrUnsafe, errHas: "not by you (uid 65534)"},
		{name: "too large", path: file("big", strings.Repeat("a", MaxSize+1), 0o600), uid: me, kind: ErrNotToken, errHas: "too large"},
		{name: "just fits", path: file("fits", strings.Repeat("a", MaxSize), 0o600), uid: me, want: strings.Repeat("a", MaxSize)},
		{name: "two lines", path: file("two", token+"\nhvs.SECONDsecondSECOND0123456789\n", 0o600), uid: me, kind: ErrNotToken, errHas: "more than one line"},
		{name: "two words", path: file("words", token+" extra\n", 0o600), uid: me, kind: ErrNotToken, errHas: "more than one line"},
		{name: "empty", path: file("empty", "", 0o600), uid: me, kind: ErrEmpty, errHas: "is empty"},
		{name: "blanks only", path: file("blank", " \n\t\n", 0o600), uid: me, kind: ErrEmpty, errHas: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root {
				if me != 0 {
					t.Skip("chown to another uid needs root")
				}
				if err := os.Chown(tt.path, nobody, nobody); err != nil {
					t.Fatal(err)
				}
			}
			// A reader that blocks (a FIFO opened without O_NONBLOCK
			// waits for a writer) fails here instead of hanging the run.
			type result struct {
				tok string
				err error
			}
			done := make(chan result, 1)
			go func() {
				tok, err := Read(tt.path, tt.uid)
				done <- result{tok.Reveal(), err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("Read(%s) is blocked", tt.name)
			}
			if tt.kind == nil {
				if r.err != nil || r.tok != tt.want {
					t.Errorf("Read(%s) = %d bytes, %v; want the token", tt.name, len(r.tok), r.err)
				}
				return
			}
			if r.err == nil || !errors.Is(r.err, tt.kind) || !strings.Contains(r.err.Error(), tt.errHas) {
				t.Errorf("Read(%s) = %v; want %v saying %q", tt.name, r.err, tt.kind, tt.errHas)
			}
			// Only an exposed file of the caller's own comes back with its
			// token (for a report); every other refusal with none.
			if exposed := errors.Is(r.err, ErrExposed); r.tok != "" && !exposed {
				t.Errorf("Read(%s) returned a token with its error", tt.name)
			} else if exposed && r.tok == "" {
				t.Errorf("Read(%s): an exposed file of ours came back without its token", tt.name)
			}
			if r.err != nil && (strings.Contains(r.err.Error(), "hvs.") || strings.Contains(r.err.Error(), "aaaa")) {
				t.Errorf("Read(%s): the error holds the file's content: %v", tt.name, r.err)
			}
			if r.err != nil && !strings.Contains(r.err.Error(), tt.path) {
				t.Errorf("Read(%s): the error does not name the file: %v", tt.name, r.err)
			}
		})
	}
}

// Root reading a file in a directory a user controls: a symlink the user put
// there to root's own private file is refused, never read through.
func TestReadRefusesLinkToAnotherFile(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "root-only")
	if err := os.WriteFile(secret, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "token")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	tok, err := Read(link, os.Geteuid())
	if !errors.Is(err, ErrUnsafe) || tok != "" {
		t.Errorf("Read(a link to a private file) = %d bytes, %v; want %v", len(tok.Reveal()), err, ErrUnsafe)
	}
}

// The mode an exposed token file had comes back with the error (the store's
// message says it without looking at the file a second time).
func TestExposedModeComesWithTheError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("hvs.TESTTOKEN\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := Read(path, os.Geteuid())
	if !errors.Is(err, ErrExposed) || ExposedMode(err) != 0o640 {
		t.Fatalf("err %v, mode %04o", err, ExposedMode(err))
	}
	if ExposedMode(errors.New("other")) != 0 {
		t.Error("a mode for an unrelated error")
	}
}
