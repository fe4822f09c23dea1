package provision

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrRoster marks a roster that cannot be trusted: provision changes nothing.
var ErrRoster = errors.New("bad roster")

// Entry is one user of the roster.
type Entry struct {
	Name       string
	ClaudeAuth bool // default true
	Parked     bool // default false
	Line       int  // where the user's key is, for messages
}

// Active says whether the user gets a token and a running agent.
func (e Entry) Active() bool { return e.ClaudeAuth && !e.Parked }

// Roster is the parsed roster, users sorted by name.
type Roster struct {
	Users []Entry
}

// userName is a plain POSIX login name: no dots, no slashes, no upper case, no
// leading dash. Anything else could walk out of /home or into another unit.
var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// ValidUserName reports whether name is a plain POSIX user name.
func ValidUserName(name string) bool { return userName.MatchString(name) }

// LoadRoster reads and parses the roster file.
func LoadRoster(path string) (*Roster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRoster, err)
	}
	r, err := ParseRoster(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// ParseRoster parses roster YAML:
//
//	users:
//	  alice: {}                 # claude_auth defaults to true
//	  bob: {parked: true}
//	  carol: {claude_auth: false, tier: gpu}   # other keys are ignored
//
// It is strict where a mistake would change who is logged in: booleans must be
// true/false, names plain POSIX names, each user listed once. A missing or null
// users: is an error, so a typo never disables the whole fleet.
func ParseRoster(data []byte) (*Roster, error) {
	// A decoder, not yaml.Unmarshal: Unmarshal reads the first document and
	// drops the rest, so users after a stray --- would silently vanish.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, fmt.Errorf("%w: %v", ErrRoster, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fmt.Errorf("%w: empty roster; want a users: map", ErrRoster)
	}
	var more yaml.Node
	switch err := dec.Decode(&more); {
	case err == io.EOF:
	case err != nil:
		return nil, fmt.Errorf("%w: a second YAML document, which does not parse: %v; the roster is one document", ErrRoster, err)
	default:
		// Even an empty one: which half the admin meant is not ours to guess.
		return nil, fmt.Errorf("%w: line %d: a second YAML document; the roster is one document", ErrRoster, more.Line)
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: line %d: the roster must be a map with a users: key", ErrRoster, top.Line)
	}
	var users *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%w: line %d: keys must be plain words", ErrRoster, k.Line)
		}
		if k.Value == "users" {
			if users != nil {
				return nil, fmt.Errorf("%w: line %d: users: given twice (first at line %d)", ErrRoster, k.Line, users.Line)
			}
			users = v
		}
	}
	if users == nil {
		return nil, fmt.Errorf("%w: no users: key (write `users: {}` for an empty roster)", ErrRoster)
	}
	if users.Kind == yaml.AliasNode {
		return nil, fmt.Errorf("%w: line %d: anchors and aliases are not supported", ErrRoster, users.Line)
	}
	if users.Kind == yaml.ScalarNode && users.ShortTag() == "!!null" {
		return nil, fmt.Errorf("%w: line %d: users: is empty (write `users: {}` if you mean no users)", ErrRoster, users.Line)
	}
	if users.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: line %d: users: must be a map keyed by OS user name", ErrRoster, users.Line)
	}
	r := &Roster{}
	seen := map[string]int{}
	for i := 0; i+1 < len(users.Content); i += 2 {
		k, v := users.Content[i], users.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%w: line %d: a user name must be a plain word", ErrRoster, k.Line)
		}
		if k.ShortTag() == "!!merge" {
			return nil, fmt.Errorf("%w: line %d: merge keys (<<) are not supported", ErrRoster, k.Line)
		}
		if !ValidUserName(k.Value) {
			return nil, fmt.Errorf("%w: line %d: %q is not a plain POSIX user name (lower case letters, digits, _ and -, not starting with a digit or -, at most 32)", ErrRoster, k.Line, k.Value)
		}
		if k.ShortTag() != "!!str" {
			return nil, fmt.Errorf("%w: line %d: user name %s reads as %s in YAML; quote it", ErrRoster, k.Line, k.Value, k.ShortTag())
		}
		if first, dup := seen[k.Value]; dup {
			return nil, fmt.Errorf("%w: line %d: user %s is listed twice (first at line %d)", ErrRoster, k.Line, k.Value, first)
		}
		seen[k.Value] = k.Line
		e, err := parseEntry(k.Value, k.Line, v)
		if err != nil {
			return nil, err
		}
		r.Users = append(r.Users, e)
	}
	sort.Slice(r.Users, func(i, j int) bool { return r.Users[i].Name < r.Users[j].Name })
	return r, nil
}

func parseEntry(name string, line int, v *yaml.Node) (Entry, error) {
	e := Entry{Name: name, ClaudeAuth: true, Line: line}
	switch {
	case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
		return e, nil // "alice:" alone takes the defaults
	case v.Kind == yaml.AliasNode:
		return e, fmt.Errorf("%w: line %d: user %s: anchors and aliases are not supported", ErrRoster, v.Line, name)
	case v.Kind != yaml.MappingNode:
		return e, fmt.Errorf("%w: line %d: user %s: want a map of settings (e.g. {claude_auth: true}) or nothing", ErrRoster, v.Line, name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			return e, fmt.Errorf("%w: line %d: user %s: settings must be plain keys", ErrRoster, k.Line, name)
		}
		if seen[k.Value] {
			return e, fmt.Errorf("%w: line %d: user %s: %s given twice", ErrRoster, k.Line, name, k.Value)
		}
		seen[k.Value] = true
		var dst *bool
		switch k.Value {
		case "claude_auth":
			dst = &e.ClaudeAuth
		case "parked":
			dst = &e.Parked
		default:
			continue // tier, team, … belong to other tools
		}
		b, err := boolValue(val)
		if err != nil {
			return e, fmt.Errorf("%w: line %d: user %s: %s: %v", ErrRoster, val.Line, name, k.Value, err)
		}
		*dst = b
	}
	return e, nil
}

// boolValue accepts only YAML's true and false: "yes", "off", 1 and "false"
// in quotes are too easy to misread to decide who stays logged in.
func boolValue(n *yaml.Node) (bool, error) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		switch n.Value {
		case "true", "True", "TRUE":
			return true, nil
		case "false", "False", "FALSE":
			return false, nil
		}
	}
	shown := n.Value
	if n.Kind != yaml.ScalarNode {
		shown = "a " + kindName(n.Kind)
	}
	return false, fmt.Errorf("want true or false, not %q", shown)
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "map"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "value"
}

// DefaultLoginDefs is where the system's UID_MIN is read from.
const DefaultLoginDefs = "/etc/login.defs"

// defaultUIDMin is shadow's own default, used when login.defs says nothing.
const defaultUIDMin = 1000

// ReadUIDMin returns UID_MIN from a login.defs file, or 1000 when the file is
// absent or unreadable or has no usable UID_MIN line. Like shadow, the last
// setting wins.
func ReadUIDMin(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return defaultUIDMin
	}
	defer f.Close()
	n := defaultUIDMin
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "UID_MIN" {
			continue
		}
		// A value we cannot read keeps the default rather than opening the
		// door to system accounts.
		if v, err := strconv.Atoi(fields[1]); err == nil && v >= 0 {
			n = v
		}
	}
	if sc.Err() != nil {
		return defaultUIDMin
	}
	return n
}

// refuseName refuses root by name, before any lookup: its home is /root and
// its "agent" would run with every privilege.
func refuseName(name string) error {
	if name == "root" {
		return errors.New("refused: root is never provisioned (the agent is for login users)")
	}
	return nil
}

// refuseAccount refuses uid 0 under any name and system accounts (uid below
// UID_MIN): they are daemons, not people with a Claude login.
func refuseAccount(acct Account, uidMin int) error {
	if err := refuseName(acct.Name); err != nil {
		return err
	}
	if acct.UID == 0 {
		return fmt.Errorf("refused: %s has uid 0 (root)", acct.Name)
	}
	if acct.UID < uidMin {
		return fmt.Errorf("refused: %s has uid %d, below UID_MIN %d: a system account, not a login user", acct.Name, acct.UID, uidMin)
	}
	return nil
}
