package lineage

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

func rt(i int) credentials.Secret {
	return credentials.Secret(fmt.Sprintf("sk-ant-ort01-refresh-%04d", i))
}

func TestLineageOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "lineage")
	l, err := Load(path)
	if err != nil {
		t.Fatalf("Load(missing) = %v; want an empty lineage", err)
	}
	for _, i := range []int{1, 2, 3, 2, 1} { // re-observing keeps the first position
		if err := l.Observe(rt(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Observe(""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		a, b credentials.Secret
		want int
	}{
		{rt(1), rt(2), -1},
		{rt(2), rt(1), 1},
		{rt(1), rt(3), -1},
		{rt(3), rt(2), 1},
		{rt(2), rt(2), 0},
		{rt(1), rt(9), 0},
		{rt(9), rt(1), 0},
		{rt(8), rt(9), 0},
		{"", rt(1), 0},
	}
	for _, tt := range tests {
		if got := l.Order(tt.a, tt.b); got != tt.want {
			t.Errorf("Order(%s, %s) = %d; want %d", tt.a.Short(), tt.b.Short(), got, tt.want)
		}
	}
	for tok, want := range map[credentials.Secret]bool{rt(1): true, rt(3): true, rt(9): false, "": false} {
		if got := l.Known(tok); got != want {
			t.Errorf("Known(%s) = %v; want %v", tok.Short(), got, want)
		}
	}

	// The file holds fingerprints only, in order, and is private.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := rt(1).Fingerprint() + "\n" + rt(2).Fingerprint() + "\n" + rt(3).Fingerprint() + "\n"
	if string(data) != want {
		t.Errorf("lineage file = %q; want %q", data, want)
	}
	if strings.Contains(string(data), "sk-ant-") {
		t.Errorf("lineage file holds a token")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("lineage file mode = %v; want 0600", fi.Mode().Perm())
	}

	// Persistence: a fresh load knows the same order.
	l2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if got := l2.Order(tt.a, tt.b); got != tt.want {
			t.Errorf("after Load: Order(%s, %s) = %d; want %d", tt.a.Short(), tt.b.Short(), got, tt.want)
		}
	}
	// A token seen after the reload goes to the end.
	if err := l2.Observe(rt(4)); err != nil {
		t.Fatal(err)
	}
	if l2.Order(rt(3), rt(4)) != -1 {
		t.Errorf("a newly observed token is not the newest")
	}
}

func TestLineageCorruptLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lineage")
	content := strings.Join([]string{
		rt(1).Fingerprint(),
		"garbage",
		"",
		"  " + rt(2).Fingerprint() + "  ",
		rt(3).Fingerprint()[:63],
		rt(3).Fingerprint() + "00",
		rt(1).Fingerprint(), // a duplicate keeps the first position
		rt(4).Fingerprint(),
	}, "\n")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Load(path)
	if err != nil {
		t.Fatalf("Load(corrupt) = %v; want corrupt lines skipped", err)
	}
	if l.Known(rt(3)) {
		t.Errorf("Known(rt3) = true; its lines were corrupt")
	}
	if l.Order(rt(1), rt(2)) != -1 || l.Order(rt(2), rt(4)) != -1 || l.Order(rt(4), rt(1)) != 1 {
		t.Errorf("order after corrupt lines: 1<2 %d, 2<4 %d, 4>1 %d; want -1 -1 1",
			l.Order(rt(1), rt(2)), l.Order(rt(2), rt(4)), l.Order(rt(4), rt(1)))
	}
}

func TestLineageUnreadable(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Errorf("Load(a directory) = nil error; want an error")
	}
}

func TestLineageCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lineage")
	var b strings.Builder
	const n = maxLen + 40
	for i := 0; i < n; i++ {
		b.WriteString(rt(i).Fingerprint() + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Observe(rt(n)); err != nil {
		t.Fatal(err)
	}
	// The oldest entries are dropped; the newest maxLen are kept in order.
	first := n + 1 - maxLen
	if l.Known(rt(first - 1)) {
		t.Errorf("Known(entry %d) = true; want it dropped by the cap of %d", first-1, maxLen)
	}
	if !l.Known(rt(first)) || !l.Known(rt(n)) {
		t.Errorf("Known(entry %d), Known(entry %d) = %v, %v; want both kept", first, n, l.Known(rt(first)), l.Known(rt(n)))
	}
	if l.Order(rt(first), rt(n)) != -1 || l.Order(rt(n), rt(n-1)) != 1 {
		t.Errorf("order after the cap is wrong")
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != maxLen || lines[0] != rt(first).Fingerprint() || lines[len(lines)-1] != rt(n).Fingerprint() {
		t.Errorf("lineage file has %d lines (first %q); want %d from entry %d", len(lines), lines[0][:8], maxLen, first)
	}
	l2, _ := Load(path)
	if l2.Known(rt(first-1)) || !l2.Known(rt(first)) || l2.Order(rt(first), rt(n)) != -1 {
		t.Errorf("the capped lineage does not persist")
	}
}

// Note puts a login in the file at once, for every process of ours to see
// (unsynced), and Persist makes it durable; the order is kept throughout.
func TestLineageNoteThenPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lineage")
	lin, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := credentials.Secret("sk-ant-ort01-note-a"), credentials.Secret("sk-ant-ort01-note-b"), credentials.Secret("sk-ant-ort01-note-c")
	for _, tok := range []credentials.Secret{a, b} {
		if err := lin.Note(tok); err != nil {
			t.Fatal(err)
		}
	}
	other, _ := Load(path)
	if !other.Known(a) || !other.Known(b) || other.Order(a, b) >= 0 {
		t.Errorf("another reader after Note: known a=%v b=%v, Order(a, b)=%d; want both, in order", other.Known(a), other.Known(b), other.Order(a, b))
	}
	if !lin.unsynced {
		t.Error("Note left nothing to sync")
	}
	if err := lin.Persist(); err != nil {
		t.Fatal(err)
	}
	if lin.unsynced {
		t.Error("Persist left the file unsynced")
	}
	if err := lin.Observe(c); err != nil {
		t.Fatal(err)
	}
	other, _ = Load(path)
	if !other.Latest(c) || other.Order(b, c) >= 0 {
		t.Error("Observe after Note/Persist did not append in order")
	}
	if err := lin.Persist(); err != nil { // nothing to do
		t.Fatal(err)
	}
}

// Fault: the agent's refresher and its backup worker share one Lineage; with
// refreshes every second (the kill -9 loop), Observe on one goroutine and
// Order on the other touched the same maps at once, which Go treats as a fatal
// error (the agent dies). Run under -race as well.
func TestLineageSharedByGoroutines(t *testing.T) {
	dir := t.TempDir()
	lin, err := Load(filepath.Join(dir, "lineage"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			if err := lin.Observe(credentials.Secret(fmt.Sprintf("sk-ant-ort01-w%04d", i))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for i := range n * 20 {
			a := credentials.Secret(fmt.Sprintf("sk-ant-ort01-w%04d", i%n))
			b := credentials.Secret(fmt.Sprintf("sk-ant-ort01-w%04d", (i+1)%n))
			_ = lin.Order(a, b)
			_ = lin.Known(a)
		}
	})
	wg.Wait()
	if got := lin.Order("sk-ant-ort01-w0000", credentials.Secret(fmt.Sprintf("sk-ant-ort01-w%04d", n-1))); got != -1 {
		t.Errorf("Order(first, last) = %d; want -1", got)
	}
}
