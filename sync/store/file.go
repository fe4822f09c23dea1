package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/gofrs/flock"
)

// File is the local store for a machine without Vault: one JSON document with the
// same fields as the Vault one, mode 0600, written atomically.
type File struct {
	path string
}

// NewFile returns a local store at path.
func NewFile(path string) *File { return &File{path: path} }

func (f *File) Describe() string { return "local file " + f.path }

type fileDoc struct {
	Version int            `json:"version"`
	Data    map[string]any `json:"data"`
}

func (f *File) Read(ctx context.Context) (*Doc, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Doc{fields: map[string]any{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read local store: %w", err)
	}
	var fd fileDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&fd); err != nil {
		return nil, fmt.Errorf("local store %s is not valid JSON; move it aside to start a new one", f.path)
	}
	if fd.Data == nil {
		fd.Data = map[string]any{}
	}
	return &Doc{Exists: len(fd.Data) > 0, Version: fd.Version, fields: fd.Data}, nil
}

func (f *File) Update(ctx context.Context, fn func(cur *Doc) (map[string]any, error)) (*Doc, error) {
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return nil, fmt.Errorf("local store: %w", err)
	}
	lk := flock.New(f.path + ".lock")
	if _, err := lk.TryLockContext(ctx, 20e6); err != nil {
		return nil, fmt.Errorf("lock local store: %w", err)
	}
	defer lk.Unlock()
	cur, err := f.Read(ctx)
	if err != nil {
		return nil, err
	}
	set, err := fn(cur)
	if err != nil {
		return cur, err
	}
	next := fileDoc{Version: cur.Version + 1, Data: cur.merged(set)}
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return cur, fmt.Errorf("local store: %w", err)
	}
	if _, err := atomicfile.Write(f.path, append(data, '\n'), 0o600); err != nil {
		return cur, fmt.Errorf("write local store: %w", err)
	}
	return &Doc{Exists: true, Version: next.Version, fields: next.Data}, nil
}
