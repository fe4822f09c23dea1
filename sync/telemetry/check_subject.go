package telemetry

import (
	"context"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// CheckSubject is what a check was about, as short fingerprints (never a
// token): the login in the credentials file, the login in the store's
// document and its setup token. An empty field means "none" (or, for the
// document's fields, "the store could not be read").
type CheckSubject struct {
	Login      string `json:"login,omitempty"`
	DocLogin   string `json:"doc_login,omitempty"`
	SetupToken string `json:"setup_token,omitempty"`
	DocRead    bool   `json:"doc_read"`
}

// SubjectOf is the subject for a file's login and a store document (nil: not read).
func SubjectOf(local *credentials.Local, doc *store.Doc) CheckSubject {
	var s CheckSubject
	if local != nil && local.State == credentials.Usable {
		s.Login = local.OAuth.RefreshToken().Short()
	}
	if doc != nil {
		s.DocRead = true
		if o, err := doc.OAuth(); err == nil && o != nil {
			s.DocLogin = o.RefreshToken().Short()
		}
		if tok := doc.SetupToken(); tok != "" {
			s.SetupToken = tok.Short()
		}
	}
	return s
}

// CurrentSubject reads the file and, with readStore, the store's document
// (bounded) for what a check now would be about.
func (t *Reporter) CurrentSubject(ctx context.Context, readStore bool) CheckSubject {
	local, _ := credentials.Read(t.Cfg.CredentialsFile)
	if !readStore {
		return SubjectOf(local, nil)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	doc, err := t.Store.Read(ctx)
	if err != nil {
		doc = nil
	}
	return SubjectOf(local, doc)
}
