package credentials

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
)

// object is a JSON object that remembers its keys' order and keeps every value as
// raw bytes, so a read-modify-write keeps what we do not understand byte for byte.
type object struct {
	keys []string
	vals map[string]json.RawMessage
}

// maxDepth bounds nesting in the values we keep: encoding/json's own limit.
// Nothing here recurses over a value (we keep values as raw bytes, and the
// compact/indent scanner is iterative), and a lower bound made a valid file
// that Claude reads (a deep value under a key we do not own) "broken", so it
// was replaced by the backup and its other keys left the live file.
const maxDepth = 10000

func parseObject(data []byte) (*object, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxError(data, dec, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("top level is %s, want a JSON object", describe(tok))
	}
	o := &object{vals: map[string]json.RawMessage{}}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxError(data, dec, err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("object key is not a string")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxError(data, dec, err)
		}
		if depth(raw) > maxDepth {
			return nil, fmt.Errorf("value of %q nests deeper than %d levels", key, maxDepth)
		}
		if _, dup := o.vals[key]; !dup {
			o.keys = append(o.keys, key)
		}
		o.vals[key] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntaxError(data, dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return o, nil
}

// syntaxError turns a decoder error into one that says where, never what: the
// bytes around an error in a credentials file may be a token.
func syntaxError(data []byte, dec *json.Decoder, err error) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("truncated JSON")
	}
	off := dec.InputOffset()
	line := 1 + bytes.Count(data[:min(int(off), len(data))], []byte("\n"))
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line = 1 + bytes.Count(data[:min(int(se.Offset), len(data))], []byte("\n"))
		return fmt.Errorf("invalid JSON near line %d (byte %d)", line, se.Offset)
	}
	return fmt.Errorf("invalid JSON near line %d", line)
}

func describe(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		return "a delimiter"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "not an object"
}

// depth is the nesting depth of a syntactically valid JSON value.
func depth(raw []byte) int {
	d, max := 0, 0
	inStr, esc := false, false
	for _, c := range raw {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			d++
			if d > max {
				max = d
			}
		case c == '}' || c == ']':
			d--
		}
	}
	return max
}

func (o *object) get(key string) (json.RawMessage, bool) {
	v, ok := o.vals[key]
	return v, ok
}

func (o *object) set(key string, v json.RawMessage) {
	if _, ok := o.vals[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = v
}

func (o *object) clone() *object {
	c := &object{keys: append([]string(nil), o.keys...), vals: make(map[string]json.RawMessage, len(o.vals))}
	for k, v := range o.vals {
		c.vals[k] = append(json.RawMessage(nil), v...)
	}
	return c
}

// with is a copy with fields set (each value marshalled to JSON, a Secret
// revealed, a nil value skipped; in key order, so a new key lands in the same
// place every time) and the keys in drop removed; every other field is kept
// in place, byte for byte.
func (o *object) with(fields map[string]any, drop ...string) (*object, error) {
	c := o.clone()
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		v := fields[k]
		if v == nil {
			continue
		}
		if s, ok := v.(Secret); ok {
			v = s.Reveal()
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", k, err)
		}
		c.set(k, b)
	}
	for _, k := range drop {
		c.remove(k)
	}
	return c, nil
}

// marshal writes the object compactly (indent "") or indented, in key order.
func (o *object) marshal(indent string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		var v bytes.Buffer
		if err := json.Compact(&v, o.vals[k]); err != nil {
			return nil, fmt.Errorf("field %q: %w", k, err)
		}
		b.Write(v.Bytes())
	}
	b.WriteByte('}')
	if indent == "" {
		return b.Bytes(), nil
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", indent); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (o *object) remove(key string) {
	if _, ok := o.vals[key]; !ok {
		return
	}
	delete(o.vals, key)
	for i, k := range o.keys {
		if k == key {
			o.keys = append(o.keys[:i:i], o.keys[i+1:]...)
			break
		}
	}
}
