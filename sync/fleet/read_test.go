package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// fakeVault answers the reader's two requests the way KV v2 does: LIST on
// the base, GET on a user's metadata. The e2e tests do the same against the
// real server; this one counts requests in flight and fails the test on
// any data path.
type fakeVault struct {
	t        *testing.T
	keys     []string
	meta     map[string]map[string]any // user -> custom_metadata; absent = 404
	status   map[string]int            // user -> forced status
	listCode int

	inFlight, maxInFlight atomic.Int32
	mu                    sync.Mutex
	paths                 []string
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxInFlight.Load()
		if n <= m || f.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(2 * time.Millisecond) // let requests overlap
	f.mu.Lock()
	f.paths = append(f.paths, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	const prefix = "/v1/secret/metadata/ws/users"
	if strings.Contains(r.URL.Path, "/data/") {
		f.t.Errorf("the reader asked for a data path: %s %s", r.Method, r.URL.Path)
	}
	if r.Method == "LIST" || r.URL.Query().Get("list") == "true" {
		if strings.TrimSuffix(r.URL.Path, "/") != prefix {
			http.Error(w, `{"errors":[]}`, 404)
			return
		}
		if f.listCode != 0 {
			w.WriteHeader(f.listCode)
			fmt.Fprint(w, `{"errors":["permission denied"]}`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"keys": f.keys}})
		return
	}
	user, ok := strings.CutPrefix(r.URL.Path, prefix+"/")
	if code := f.status[user]; code != 0 {
		w.WriteHeader(code)
		fmt.Fprint(w, `{"errors":["forced"]}`)
		return
	}
	cm, exists := f.meta[user]
	if !ok || !exists {
		w.WriteHeader(404)
		fmt.Fprint(w, `{"errors":[]}`)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"current_version": 3, "custom_metadata": cm}})
}

func newFakeReader(t *testing.T, f *fakeVault, workers int) *Reader {
	f.t = t
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := vault.NewClient(&vault.Config{Address: srv.URL, MaxRetries: 0, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("test-token-not-a-secret")
	return &Reader{Client: c, Mount: "secret", Base: "ws/users", Workers: workers}
}

func TestReaderRows(t *testing.T) {
	f := &fakeVault{
		keys: []string{"alice", "alice/", "bob/", "carol", "dave", "erin", "erin/"},
		meta: map[string]map[string]any{
			"alice": {"owner_host": "h1", "host.h1": "label=ws-01;status=OK;deadline=1800000000;doc=main", "vaultwarden_user": "x"},
			"carol": nil, // a backup, no health
			"dave":  {"host.h3": "status=OK;status_at=yesterday"},
			"erin":  {"owner_host": "h1", "host.h1": "status=WARN;doc=main", "host.h2": "label=ws-02;doc=hosts", "host.": "x"},
		},
	}
	r := newFakeReader(t, f, 0)
	users, err := r.Users(context.Background())
	if err != nil || !slices.Equal(users, []string{"alice", "bob", "carol", "dave", "erin"}) {
		t.Fatalf("Users() = %q, %v", users, err)
	}
	rows, err := r.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	Sort(rows)
	var got []string
	for _, r := range rows {
		got = append(got, fmt.Sprintf("%s %s/%s owner=%v label=%q doc=%s note=%q", r.Status, r.User, r.HostID, r.Owner, r.Label, r.Doc, r.Note))
	}
	want := []string{
		`WARN erin/h1 owner=true label="" doc=main note=""`,
		`UNKNOWN bob/ owner=false label="" doc= note="no main document"`,
		`UNKNOWN carol/ owner=false label="" doc= note="no health yet (no agent of this version has reported)"`,
		`UNKNOWN dave/h3 owner=false label="" doc= note="unreadable health: not a health value: status_at=\"yesterday\" is not unix seconds"`,
		`UNKNOWN erin/h2 owner=false label="ws-02" doc=hosts note=""`, // no status said: unknown
		`OK alice/h1 owner=true label="ws-01" doc=main note=""`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rows[5].Deadline.Unix() != 1800000000 {
		t.Errorf("alice's deadline = %v", rows[5].Deadline)
	}
}

// TestReaderBounded: many users are read concurrently, never more at once
// than the workers.
func TestReaderBounded(t *testing.T) {
	f := &fakeVault{meta: map[string]map[string]any{}}
	for i := range 200 {
		u := fmt.Sprintf("u%03d", i)
		f.keys = append(f.keys, u)
		f.meta[u] = map[string]any{"host.h": "status=OK"}
	}
	r := newFakeReader(t, f, 5)
	rows, err := r.Read(context.Background())
	if err != nil || len(rows) != 200 {
		t.Fatalf("Read: %d rows, %v", len(rows), err)
	}
	if m := f.maxInFlight.Load(); m > 5 || m < 2 {
		t.Errorf("at most %d requests at once; want 2..5 (bounded, and concurrent)", m)
	}
	if len(f.paths) != 201 {
		t.Errorf("%d requests; want 201 (one LIST, one read per user)", len(f.paths))
	}
}

func TestReaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *fakeVault
		want error
	}{
		{"list 403", &fakeVault{listCode: 403}, store.ErrForbidden},
		{"metadata 403", &fakeVault{keys: []string{"a", "b"}, meta: map[string]map[string]any{"a": nil}, status: map[string]int{"b": 403}}, store.ErrForbidden},
		{"list 503", &fakeVault{listCode: 503}, store.ErrUnreachable},
		{"metadata 500", &fakeVault{keys: []string{"a"}, status: map[string]int{"a": 500}}, store.ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newFakeReader(t, tc.f, 0).Read(context.Background())
			if !errors.Is(err, tc.want) {
				t.Errorf("Read: %v; want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "test-token") {
				t.Errorf("the error holds the token: %v", err)
			}
		})
	}
	// Nothing listed (no user has a document yet): no rows, no error.
	rows, err := newFakeReader(t, &fakeVault{}, 0).Read(context.Background())
	if err != nil || len(rows) != 0 {
		t.Errorf("an empty base: %v, %v", rows, err)
	}
	// Vault not there at all.
	r := &Reader{Mount: "secret", Base: "ws/users"}
	r.Client, _ = vault.NewClient(&vault.Config{Address: "http://127.0.0.1:1", MaxRetries: 0, Timeout: time.Second})
	if _, err := r.Read(context.Background()); !errors.Is(err, store.ErrUnreachable) {
		t.Errorf("Vault away: %v; want ErrUnreachable", err)
	}
}
