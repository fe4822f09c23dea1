package promfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A publisher over a metrics dir of this test's uid, where "me" and "you"
// are names of that uid and "them" of another: what each directory holds is
// published, refused or left out, and one file's fault never stops another's.
// (The e2e runs it over real users; see e2e/metrics_e2e_test.go.)
func TestPublish(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	os.Chmod(src, 0o755)
	me := os.Getuid()
	for _, u := range []string{"me", "you", "them", "fifo", "link", "big"} {
		os.Mkdir(filepath.Join(src, u), 0o700)
	}
	os.WriteFile(UserFile(src, "me"), []byte(good), 0o644)
	os.WriteFile(UserFile(src, "you"), []byte("garbage\n"), 0o644)
	os.WriteFile(UserFile(src, "them"), []byte(good), 0o644)
	syscall.Mkfifo(UserFile(src, "fifo"), 0o644)
	os.Symlink(UserFile(src, "me"), UserFile(src, "link"))
	os.WriteFile(UserFile(src, "big"), bytes.Repeat([]byte("#\n"), MaxFileSize), 0o644)
	os.WriteFile(filepath.Join(src, "stray.prom"), []byte(good), 0o644) // not a user's directory
	var log bytes.Buffer
	p := &Publisher{Source: src, Target: dst, Log: &log, LookupUID: func(name string) (int, error) {
		if name == "them" {
			return me + 1, nil
		}
		return me, nil
	}}
	done := make(chan struct{})
	var users []UserResult
	var err error
	go func() { users, err = p.Publish(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked (on the FIFO?)")
	}
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"me": "", "you": "garbage: no value", "them": "not to a user them", "fifo": "not a regular file", "link": "is a symlink", "big": "more than"}
	if len(users) != len(want) {
		t.Errorf("%d users; want %d: %+v", len(users), len(want), users)
	}
	for _, u := range users {
		switch w := want[u.User]; {
		case w == "" && u.Err != nil:
			t.Errorf("%s: %v", u.User, u.Err)
		case w != "" && (u.Err == nil || !strings.Contains(u.Err.Error(), w)):
			t.Errorf("%s: %v; want an error with %q", u.User, u.Err, w)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dst, FileName))
	if !strings.Contains(string(pub), `claude_auth_sync_failures_total{user="me"} 3`) || strings.Contains(string(pub), "alice") {
		t.Errorf("published:\n%s", pub)
	}
	if n := strings.Count(log.String(), " WARN metrics not published: "); n != 5 {
		t.Errorf("%d WARN lines; want 5 (one per refused user):\n%s", n, log.String())
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 1 {
		t.Errorf("the textfile dir holds %d entries; want the one file (no temp left)", len(ents))
	}
	log.Reset()
	p.Publish()
	if log.Len() != 0 {
		t.Errorf("the same faults said again:\n%s", log.String())
	}

	// A metrics dir others may write into publishes nothing.
	os.Chmod(src, 0o1777)
	if _, err := p.Publish(); !errors.Is(err, ErrSharedSource) {
		t.Errorf("a 1777 metrics dir: %v; want ErrSharedSource", err)
	}
}
