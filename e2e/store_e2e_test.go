package e2e_test

import (
	"context"
	"errors"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

func vaultStore(t *testing.T, w *world) *store.Vault {
	t.Helper()
	v, err := store.NewVault(store.VaultConfig{Address: vsrv.Addr, Mount: "secret", Path: w.user.Path,
		TokenFile: w.user.TokenFile, User: w.name, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Prepare(context.Background()); err != nil {
		t.Fatalf("prepare with the scoped token: %v", err)
	}
	return v
}

// A concurrent writer between our read and our write: our check-and-set write
// fails, we read again and merge again; the other writer's data survives.
func TestConcurrentWriterNeverOverwritten(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	v := vaultStore(t, w)
	if _, err := rootKV().Put(ctx, w.user.Path, map[string]any{"vaultwarden_x": "1"}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	doc, err := v.Update(ctx, func(cur *store.Doc) (map[string]any, error) {
		calls++
		if calls == 1 {
			// Someone else writes after our read.
			if _, err := rootKV().Put(ctx, w.user.Path, map[string]any{"vaultwarden_x": "2", "other": "theirs"}); err != nil {
				t.Fatal(err)
			}
		}
		return map[string]any{"claude_ai_oauth_json": `{"x":1}`}, nil
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if calls != 2 {
		t.Errorf("update fn called %d times; want 2 (one conflict, one retry)", calls)
	}
	got, ver := w.vaultDoc()
	if ver != 3 || doc.Version != 3 {
		t.Errorf("version = %d (returned %d); want 3", ver, doc.Version)
	}
	if got["vaultwarden_x"] != "2" || got["other"] != "theirs" || got["claude_ai_oauth_json"] != `{"x":1}` {
		t.Errorf("merged doc = %v; want the other writer's keys kept and ours added", got)
	}
	// Version 2 is the other writer's, untouched.
	v2, err := rootKV().GetVersion(ctx, w.user.Path, 2)
	if err != nil || v2.Data["other"] != "theirs" || v2.Data["claude_ai_oauth_json"] != nil {
		t.Errorf("version 2 = %v, %v; want exactly the other writer's document", v2, err)
	}
}

// A writer that keeps winning: after a bounded number of conflicts we give up
// with ErrConflict and have written nothing.
func TestEndlessConflictGivesUpCleanly(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	v := vaultStore(t, w)
	n := 0
	_, err := v.Update(ctx, func(cur *store.Doc) (map[string]any, error) {
		n++
		if _, err := rootKV().Put(ctx, w.user.Path, map[string]any{"n": n}); err != nil {
			t.Fatal(err)
		}
		return map[string]any{"claude_ai_oauth_json": "ours"}, nil
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("err = %v; want ErrConflict", err)
	}
	got, _ := w.vaultDoc()
	if _, ok := got["claude_ai_oauth_json"]; ok {
		t.Errorf("our write landed despite the conflicts")
	}
}

// When the latest version is deleted, the cas is the metadata's
// current_version; with no metadata at all it is 0.
func TestDeletedLatestVersionAndFreshPath(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	v := vaultStore(t, w)
	doc, err := v.Read(ctx)
	if err != nil || doc.Exists || doc.Version != 0 {
		t.Fatalf("fresh path: %v %v; want no document, version 0", doc, err)
	}
	if _, err := v.Update(ctx, func(*store.Doc) (map[string]any, error) { return map[string]any{"a": "1"}, nil }); err != nil {
		t.Fatalf("first write (cas=0): %v", err)
	}
	if _, err := rootKV().Put(ctx, w.user.Path, map[string]any{"a": "2"}); err != nil {
		t.Fatal(err)
	}
	if err := rootKV().Delete(ctx, w.user.Path); err != nil {
		t.Fatal(err)
	}
	doc, err = v.Read(ctx)
	if err != nil || doc.Exists || doc.Version != 2 {
		t.Fatalf("after delete: exists=%v version=%d err=%v; want absent, version 2", doc.Exists, doc.Version, err)
	}
	out, err := v.Update(ctx, func(cur *store.Doc) (map[string]any, error) { return map[string]any{"b": "1"}, nil })
	if err != nil {
		t.Fatalf("write after delete: %v", err)
	}
	if out.Version != 3 {
		t.Errorf("version after delete = %d; want 3", out.Version)
	}
}

// The scoped token cannot PATCH (no patch capability), cannot read another
// user's path, and lookup-self/renew-self work.
func TestScopedPolicyIsExact(t *testing.T) {
	alice, bob := newWorld(t), newWorld(t)
	ctx := context.Background()
	c := vsrv.Root()
	c.SetToken(alice.user.Token)
	var re *vault.ResponseError
	if _, err := c.Logical().ReadWithContext(ctx, "secret/data/"+bob.user.Path); !errors.As(err, &re) || re.StatusCode != 403 {
		t.Errorf("alice's token reading bob's path: %v; want 403", err)
	}
	if _, err := c.Logical().ReadWithContext(ctx, "secret/data/"+alice.user.Path+"x"); !errors.As(err, &re) || re.StatusCode != 403 {
		t.Errorf("alice's token reading a path that extends hers: %v; want 403", err)
	}
	if _, err := c.KVv2("secret").Patch(ctx, alice.user.Path, map[string]any{"a": "1"}); err == nil {
		t.Errorf("plain PATCH allowed; the policy must not grant patch")
	}
	if _, err := c.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		t.Errorf("lookup-self: %v", err)
	}
	if _, err := c.Auth().Token().RenewSelfWithContext(ctx, 0); err != nil {
		t.Errorf("renew-self: %v", err)
	}
}
