package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// schemaDoc is where the JSON of `status --json` is written down.
const schemaDoc = "../../docs/status-json.md"

// docField is one row of the field table: its type and whether it may be absent.
type docField struct {
	typ      string
	optional bool
}

var docRow = regexp.MustCompile("^\\| `([a-z_.]+)` \\| ([a-z ]+?) \\| ?(optional)? ?\\|")

func readSchema(t *testing.T) map[string]docField {
	t.Helper()
	f, err := os.Open(schemaDoc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]docField{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := docRow.FindStringSubmatch(sc.Text()); m != nil {
			if _, dup := out[m[1]]; dup {
				t.Errorf("%s documents %s twice", schemaDoc, m[1])
			}
			out[m[1]] = docField{typ: m[2], optional: m[3] != ""}
		}
	}
	if len(out) < 20 {
		t.Fatalf("%s: only %d field rows found", schemaDoc, len(out))
	}
	return out
}

// jsonFields walks a decoded JSON value: every field's path and its type
// in the document's words. An object's own fields are walked, except
// out_of_range's keys, which are field names.
func jsonFields(t *testing.T, prefix string, v any, out map[string]string) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, val := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		var typ string
		switch x := val.(type) {
		case string:
			typ = "string"
			if _, err := time.Parse(time.RFC3339Nano, x); err == nil {
				typ = "time"
			}
		case float64:
			typ = "number"
			if x == float64(int64(x)) {
				typ = "integer"
			}
		case bool:
			typ = "boolean"
		case []any:
			// An array's elements are all strings or all objects (whose
			// fields are walked, as parent.field); an empty one is "array".
			typ = "array"
			for i, e := range x {
				var et string
				switch e.(type) {
				case string:
					et = "array of strings"
				case map[string]any:
					et = "array of objects"
					jsonFields(t, p, e, out)
				default:
					et = "array of something else"
				}
				if i > 0 && et != typ {
					et = "array of mixed elements"
				}
				typ = et
			}
		case map[string]any:
			typ = "object"
			if p != "out_of_range" {
				jsonFields(t, p, x, out)
			}
		case nil:
			typ = "null"
		}
		out[p] = typ
	}
}

// compatible: a documented number may print as an integer, a string may
// happen to look like a time, an array may be empty.
func compatible(doc, got string) bool {
	return doc == got || doc == "number" && got == "integer" || doc == "string" && got == "time" ||
		strings.HasPrefix(doc, "array") && got == "array"
}

// checkAgainstSchema: every field printed is documented, with its type.
func checkAgainstSchema(t *testing.T, schema map[string]docField, printed []byte) map[string]string {
	t.Helper()
	var v any
	if err := json.Unmarshal(printed, &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, printed)
	}
	got := map[string]string{}
	jsonFields(t, "", v, got)
	for p, typ := range got {
		d, ok := schema[p]
		switch {
		case !ok:
			t.Errorf("status --json prints %s (%s), which %s does not document", p, typ, schemaDoc)
		case !compatible(d.typ, typ):
			t.Errorf("status --json prints %s as %s; %s says %s", p, typ, schemaDoc, d.typ)
		}
	}
	// Fields the document says are always there are there (when their parent is).
	for p, d := range schema {
		parent, _, nested := strings.Cut(p, ".")
		if i := strings.LastIndex(p, "."); i > 0 {
			parent = p[:i]
		}
		if d.optional || (nested && (got[parent] == "" || got[parent] == "array")) {
			continue // optional, or in a parent left out or an empty array
		}
		if _, ok := got[p]; !ok {
			t.Errorf("%s says %s is always there; status --json left it out", schemaDoc, p)
		}
	}
	return got
}

// fill sets every field of v to something that is not its zero value, so
// that each field the report has reaches the JSON.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.String:
		v.SetString("x")
	case reflect.Int, reflect.Int64:
		v.SetInt(7)
	case reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	}
}

// TestStatusJSONSchema: docs/status-json.md is the JSON `status --json`
// prints: a report with every field set has each one documented, with its
// type, and every documented field exists; the command's real output, logged
// in and logged out, agrees with the document too.
func TestStatusJSONSchema(t *testing.T) {
	schema := readSchema(t)

	var full telemetry.Report
	fill(reflect.ValueOf(&full).Elem())
	full.Agent.VaultTokenTTL = "" // Status never sets it: the report's own vault_token_ttl says it
	full.OutOfRange = nil         // its keys are field names, not fields
	var buf, errb bytes.Buffer
	if code := printJSON(&buf, &errb, full); code != 0 {
		t.Fatalf("printJSON: %d %s", code, errb.String())
	}
	got := checkAgainstSchema(t, schema, buf.Bytes())
	var missing []string
	for p := range schema {
		if _, ok := got[p]; !ok && p != "out_of_range" {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s documents fields the report does not have: %v", schemaDoc, missing)
	}

	// The command itself, on a real home: logged out, then logged in.
	dir := sandboxHome(t)
	creds := filepath.Join(dir, "credentials.json")
	args := []string{"status", "--json", "--credentials", creds, "--state-dir", filepath.Join(dir, "state"),
		"--store", "file", "--claude", filepath.Join(dir, "no-claude")}
	for _, tc := range []struct {
		name, body string
		code       int
	}{
		{"logged out", "", telemetry.StatusNotLoggedIn},
		{"logged in", `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-SCHEMA-A","refreshToken":"sk-ant-ort01-SCHEMA-R","expiresAt":1767225600000,"refreshTokenExpiresAt":4102444800000}}`, telemetry.StatusUsable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.body != "" {
				if err := os.WriteFile(creds, []byte(tc.body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var out, errb bytes.Buffer
			if code := Main(args, &out, &errb); code != tc.code {
				t.Fatalf("status --json: exit %d (%s); want %d", code, errb.String(), tc.code)
			}
			checkAgainstSchema(t, schema, out.Bytes())
		})
	}
}
