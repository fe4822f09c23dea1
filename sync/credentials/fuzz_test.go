package credentials

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzParseMerge: any bytes either fail to parse with an error (never a panic),
// or parse into a file whose claudeAiOauth can be replaced and written back as
// valid JSON that keeps every other top-level key, and that reads back with the
// new login.
func FuzzParseMerge(f *testing.F) {
	f.Add([]byte(`{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1},"mcpOAuth":{"x":1}}`))
	f.Add([]byte(`{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0}}`))
	f.Add([]byte(`{"claudeAiOauth":null}`))
	f.Add([]byte(`{"a":[1,2,{"b":"\u00e9"}],"claudeAiOauth":{"expiresAt":"1"}}`))
	f.Add([]byte(`{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1e3}}`))
	f.Add([]byte("{\"k\":\"\xff\"}"))
	f.Add([]byte(`[`))
	next, _ := ParseOAuth([]byte(`{"accessToken":"na","refreshToken":"nr","expiresAt":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		if o, err := file.OAuth(); err == nil {
			_ = o.Usable()
			_ = o.Compact()
			_ = o.ExpiresAt()
		}
		out, err := file.WithOAuth(next).Marshal()
		if err != nil {
			t.Fatalf("Marshal after merge: %v", err)
		}
		if !json.Valid(out) {
			t.Fatalf("merged file is not valid JSON")
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("merged file does not parse: %v", err)
		}
		o, err := back.OAuth()
		if err != nil || !o.Equal(next) {
			t.Fatalf("merged file does not hold the new login")
		}
		keys := strings.Join(back.Keys(), "\x00")
		for _, k := range file.Keys() {
			if !strings.Contains("\x00"+keys+"\x00", "\x00"+k+"\x00") {
				t.Fatalf("key %q lost in the merge", k)
			}
		}
		for _, k := range file.Keys() {
			if k == OAuthKey {
				continue
			}
			a, _ := file.top.get(k)
			b, _ := back.top.get(k)
			var ca, cb bytes.Buffer
			if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil || !bytes.Equal(ca.Bytes(), cb.Bytes()) {
				t.Fatalf("value of %q changed in the merge", k)
			}
		}
	})
}
