package watcher

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// start runs a watcher on dir/.credentials.json and drains its first Rescan.
func start(t *testing.T, path string) *Watcher {
	t.Helper()
	w := New(path, Options{Debounce: 20 * time.Millisecond, Rescan: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case c := <-w.C():
		if c.Reason != Rescan {
			t.Fatalf("first change = %s; want rescan", c.Reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no initial rescan")
	}
	return w
}

func expect(t *testing.T, w *Watcher, what string) Change {
	t.Helper()
	select {
	case c := <-w.C():
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no change reported", what)
	}
	return Change{}
}

func expectNone(t *testing.T, w *Watcher, what string) {
	t.Helper()
	select {
	case c := <-w.C():
		t.Fatalf("%s: unexpected change %s", what, c.Reason)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestWatcherSeesEveryWayOfWriting(t *testing.T) {
	cases := []struct {
		name  string
		write func(t *testing.T, dir, path string)
	}{
		{"rename over", func(t *testing.T, dir, path string) {
			tmp := filepath.Join(dir, ".credentials.json.tmp-1")
			os.WriteFile(tmp, []byte(`{"a":2}`), 0o600)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"in place", func(t *testing.T, dir, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(`{"a":3}`)
			f.Close()
		}},
		{"delete then create", func(t *testing.T, dir, path string) {
			os.Remove(path)
			os.WriteFile(path, []byte(`{"a":4}`), 0o600)
		}},
		{"delete", func(t *testing.T, dir, path string) { os.Remove(path) }},
		{"chmod", func(t *testing.T, dir, path string) { os.Chmod(path, 0o644) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, ".credentials.json")
			os.WriteFile(path, []byte(`{"a":1}`), 0o600)
			w := start(t, path)
			tc.write(t, dir, path)
			if c := expect(t, w, tc.name); c.Reason != Changed {
				t.Errorf("%s: reason %s; want changed", tc.name, c.Reason)
			}
		})
	}
}

func TestWatcherIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".credentials.json")
	w := start(t, path)
	os.WriteFile(filepath.Join(dir, "settings.json"), []byte("{}"), 0o600)
	os.WriteFile(filepath.Join(dir, ".credentials.json.bak"), []byte("{}"), 0o600)
	expectNone(t, w, "other files")
}

func TestWatcherSurvivesDirectoryRecreate(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, ".claude")
	path := filepath.Join(dir, ".credentials.json")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(path, []byte(`{}`), 0o600)
	w := start(t, path)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	expect(t, w, "directory removed")
	os.MkdirAll(dir, 0o700)
	// Drain whatever the re-creation itself reported, then write the file.
	time.Sleep(100 * time.Millisecond)
	for len(w.C()) > 0 {
		<-w.C()
	}
	os.WriteFile(path, []byte(`{"b":1}`), 0o600)
	if c := expect(t, w, "file in recreated directory"); c.Reason != Changed {
		t.Errorf("reason %s; want changed", c.Reason)
	}
}

func TestWatcherStartsBeforeDirectoryExists(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, ".claude", ".credentials.json")
	w := start(t, path)
	os.MkdirAll(filepath.Dir(path), 0o700)
	time.Sleep(100 * time.Millisecond)
	for len(w.C()) > 0 {
		<-w.C()
	}
	os.WriteFile(path, []byte(`{}`), 0o600)
	expect(t, w, "file created in a directory that did not exist at start")
}

// A burst is coalesced: many writes, few notifications, and the last one comes
// after the last write.
func TestWatcherCoalescesBursts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".credentials.json")
	w := start(t, path)
	n := 0
	stop := make(chan struct{})
	counted := make(chan int)
	go func() {
		c := 0
		for {
			select {
			case <-w.C():
				c++
			case <-stop:
				counted <- c
				return
			}
		}
	}()
	for i := 0; i < 1000; i++ {
		os.WriteFile(path, []byte(`{"i":`+string(rune('0'+i%10))+`}`), 0o600)
		n++
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	got := <-counted
	if got < 1 || got >= n/10 {
		t.Errorf("%d writes gave %d changes; want at least 1 and far fewer than the writes", n, got)
	}
}

// A file rewritten without pause still produces changes while the stream goes
// on: the debounce never holds a change back longer than MaxDelay.
func TestWatcherMaxDelayUnderEndlessWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".credentials.json")
	w := New(path, Options{Debounce: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond, Rescan: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	<-w.C() // the initial rescan
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				os.WriteFile(path, []byte(`{}`), 0o600)
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	defer close(stop)
	select {
	case c := <-w.C():
		if c.Reason != Changed {
			t.Errorf("reason %s; want changed", c.Reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change while the file was being rewritten non-stop")
	}
}
