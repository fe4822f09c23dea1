package eventlog

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
)

func TestJournalLineHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewJournalLineHandler(&buf, "first.last", slog.LevelInfo))
	log.Info("store in use", "store", "vault http://127.0.0.1:8200 (secret/x)")
	log.Warn("cannot save state", "err", errors.New("disk\nfull"))
	log.Debug("hidden")
	log.With("pid", 7).WithGroup("g").Error("boom", "n", 1)
	want := "<6>user=first.last store in use store=\"vault http://127.0.0.1:8200 (secret/x)\"\n" +
		"<4>user=first.last cannot save state err=\"disk\\nfull\"\n" +
		"<3>user=first.last boom pid=7 g.n=1\n"
	if got := buf.String(); got != want {
		t.Errorf("journal lines:\n%s\nwant:\n%s", got, want)
	}
}

func TestJournalLineHandlerMasksTokens(t *testing.T) {
	var buf bytes.Buffer
	slog.New(NewJournalLineHandler(&buf, "u", slog.LevelInfo)).Info("x", "v", "sk-ant-oat01-abcdefghijklmnopqrstuvwxyz")
	if bytes.Contains(buf.Bytes(), []byte("abcdefghijklmnop")) {
		t.Errorf("a token shape reached the journal line: %q", buf.String())
	}
}
