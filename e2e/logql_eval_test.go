package e2e_test

// A small, strict evaluator for exactly the LogQL the shipped Loki rule uses
// (packaging/alerts/loki-rules.yaml), so the rule can be tried on the real
// journal of the systemd container without a Loki: the expression is parsed
// out of the shipped YAML, journal fields become labels the way the runbook's
// promtail relabelling says, and any construct the evaluator does not know
// fails the test instead of being guessed at.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"
)

// lokiRule is the parsed rule: sum by (by…) (count_over_time(selector
// stages… [window])) > 0.
type lokiRule struct {
	name     string
	by       []string
	window   time.Duration
	matchers []lokiMatcher
	stages   []lokiStage
}

type lokiMatcher struct {
	name string
	re   *regexp.Regexp // = is an anchored literal, =~ an anchored regexp
}

// lokiStage is one pipeline stage; ok false drops the line.
type lokiStage func(line string, lbs map[string]string) (ok bool, err error)

// shippedLokiRule reads the one alert of the shipped rules file.
func shippedLokiRule(t *testing.T) lokiRule {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "alerts", "loki-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("loki-rules.yaml: %v", err)
	}
	if len(doc.Groups) != 1 || len(doc.Groups[0].Rules) != 1 {
		t.Fatalf("loki-rules.yaml: want one group with one rule")
	}
	r := doc.Groups[0].Rules[0]
	rule, err := parseLokiRule(r.Expr)
	if err != nil {
		t.Fatalf("the rule's LogQL: %v\n%s", err, r.Expr)
	}
	rule.name = r.Alert
	return rule
}

// lokiLexer splits LogQL into tokens: identifiers, "…" and `…` strings,
// durations, numbers and operators.
type lokiLexer struct {
	toks []string
	i    int
}

var lokiToken = regexp.MustCompile("^(?:\\s+|[A-Za-z_][A-Za-z0-9_]*|\"(?:[^\"\\\\]|\\\\.)*\"|`[^`]*`|[0-9]+[a-z]+|[0-9]+|\\|=|=~|!=|!~|\\|~|[|{}()\\[\\],=>])")

func lexLogQL(s string) (*lokiLexer, error) {
	l := &lokiLexer{}
	for s != "" {
		m := lokiToken.FindString(s)
		if m == "" {
			return nil, fmt.Errorf("unknown text at %q", s)
		}
		if strings.TrimSpace(m) != "" {
			l.toks = append(l.toks, m)
		}
		s = s[len(m):]
	}
	return l, nil
}

func (l *lokiLexer) peek() string {
	if l.i < len(l.toks) {
		return l.toks[l.i]
	}
	return ""
}

func (l *lokiLexer) next() string { t := l.peek(); l.i++; return t }

func (l *lokiLexer) want(tok string) error {
	if got := l.next(); got != tok {
		return fmt.Errorf("want %q, have %q (token %d)", tok, got, l.i)
	}
	return nil
}

// str reads a "…" or `…` string.
func (l *lokiLexer) str() (string, error) {
	t := l.next()
	switch {
	case strings.HasPrefix(t, "`"):
		return strings.Trim(t, "`"), nil
	case strings.HasPrefix(t, `"`):
		return strconv.Unquote(t)
	}
	return "", fmt.Errorf("want a string, have %q", t)
}

func isIdent(t string) bool { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(t) }

// parseLokiRule knows: sum by (…) ( count_over_time( {l="v", l=~"re"}
// |= "s" | regexp `re` | label_format l=`tmpl` | l!="" | l="v" [dur] ) ) > 0.
func parseLokiRule(expr string) (lokiRule, error) {
	var r lokiRule
	l, err := lexLogQL(expr)
	if err != nil {
		return r, err
	}
	for _, w := range []string{"sum", "by", "("} {
		if err := l.want(w); err != nil {
			return r, err
		}
	}
	for {
		t := l.next()
		if !isIdent(t) {
			return r, fmt.Errorf("sum by: want a label, have %q", t)
		}
		r.by = append(r.by, t)
		if l.peek() == ")" {
			l.next()
			break
		}
		if err := l.want(","); err != nil {
			return r, err
		}
	}
	for _, w := range []string{"(", "count_over_time", "(", "{"} {
		if err := l.want(w); err != nil {
			return r, err
		}
	}
	for {
		name := l.next()
		if !isIdent(name) {
			return r, fmt.Errorf("selector: want a label, have %q", name)
		}
		op := l.next()
		v, err := l.str()
		if err != nil {
			return r, err
		}
		switch op {
		case "=":
			v = regexp.QuoteMeta(v)
		case "=~":
		default:
			return r, fmt.Errorf("selector: the evaluator does not know the matcher %q", op)
		}
		re, err := regexp.Compile("^(?:" + v + ")$")
		if err != nil {
			return r, err
		}
		r.matchers = append(r.matchers, lokiMatcher{name, re})
		if l.peek() == "}" {
			l.next()
			break
		}
		if err := l.want(","); err != nil {
			return r, err
		}
	}
	for l.peek() != "[" {
		st, err := parseLokiStage(l)
		if err != nil {
			return r, err
		}
		r.stages = append(r.stages, st)
	}
	l.next()
	d, err := time.ParseDuration(l.next())
	if err != nil {
		return r, fmt.Errorf("range: %v", err)
	}
	r.window = d
	for _, w := range []string{"]", ")", ")", ">", "0"} {
		if err := l.want(w); err != nil {
			return r, err
		}
	}
	if l.peek() != "" {
		return r, fmt.Errorf("unknown text after the rule: %q", l.toks[l.i:])
	}
	return r, nil
}

func parseLokiStage(l *lokiLexer) (lokiStage, error) {
	switch t := l.next(); t {
	case "|=":
		s, err := l.str()
		if err != nil {
			return nil, err
		}
		return func(line string, _ map[string]string) (bool, error) { return strings.Contains(line, s), nil }, nil
	case "|":
	default:
		return nil, fmt.Errorf("the evaluator does not know the stage %q", t)
	}
	switch t := l.next(); {
	case t == "regexp":
		s, err := l.str()
		if err != nil {
			return nil, err
		}
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, err
		}
		// Loki's regexp parser: each named group becomes a label; a line
		// it does not match is kept, with no labels added.
		return func(line string, lbs map[string]string) (bool, error) {
			if m := re.FindStringSubmatch(line); m != nil {
				for i, n := range re.SubexpNames() {
					if n != "" {
						lbs[n] = m[i]
					}
				}
			}
			return true, nil
		}, nil
	case t == "label_format":
		name := l.next()
		if !isIdent(name) {
			return nil, fmt.Errorf("label_format: want a label, have %q", name)
		}
		if err := l.want("="); err != nil {
			return nil, err
		}
		tmplText, err := l.str()
		if err != nil {
			return nil, err
		}
		if l.peek() == "," {
			return nil, fmt.Errorf("label_format: the evaluator knows one label per stage")
		}
		// Go's builtins only (if, and, eq, printf …): any other function
		// fails to parse here, so the rule uses none this test cannot vouch
		// for. A label the line lacks reads as "".
		tmpl, err := template.New(name).Option("missingkey=zero").Parse(tmplText)
		if err != nil {
			return nil, fmt.Errorf("label_format %s: %v", name, err)
		}
		return func(_ string, lbs map[string]string) (bool, error) {
			var b strings.Builder
			if err := tmpl.Execute(&b, lbs); err != nil {
				return false, err
			}
			lbs[name] = b.String()
			return true, nil
		}, nil
	case isIdent(t):
		op := l.next()
		v, err := l.str()
		if err != nil {
			return nil, err
		}
		switch op {
		case "=":
			return func(_ string, lbs map[string]string) (bool, error) { return lbs[t] == v, nil }, nil
		case "!=":
			return func(_ string, lbs map[string]string) (bool, error) { return lbs[t] != v, nil }, nil
		}
		return nil, fmt.Errorf("label filter: the evaluator does not know %q", op)
	default:
		return nil, fmt.Errorf("the evaluator does not know the stage | %s", t)
	}
}

// promtailRelabel is one rule of the runbook's relabel_configs: a journal
// field (promtail's __journal_<field, lower case>) copied to a label.
type promtailRelabel struct {
	field, label string
}

// runbookRelabel reads the relabel_configs of the promtail block in the
// runbook's WorkstationClaudeAuthInvalid section; only plain copies are known.
func runbookRelabel(t *testing.T) []promtailRelabel {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(scrape_configs:.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("the runbook has no promtail scrape_configs block")
	}
	var doc struct {
		ScrapeConfigs []struct {
			Relabel []map[string]any `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(m[1], &doc); err != nil {
		t.Fatalf("the runbook's promtail block: %v", err)
	}
	if len(doc.ScrapeConfigs) != 1 {
		t.Fatalf("the runbook's promtail block: want one scrape config")
	}
	var out []promtailRelabel
	for _, rc := range doc.ScrapeConfigs[0].Relabel {
		src, _ := rc["source_labels"].([]any)
		target, _ := rc["target_label"].(string)
		if len(rc) != 2 || len(src) != 1 || target == "" {
			t.Fatalf("the evaluator knows only one source label copied to a target label: %v", rc)
		}
		s, _ := src[0].(string)
		if !strings.HasPrefix(s, "__journal_") {
			t.Fatalf("relabel source %q is not a journal field", s)
		}
		out = append(out, promtailRelabel{field: strings.ToUpper(strings.TrimPrefix(s, "__journal_")), label: target})
	}
	return out
}

// labels are an entry's labels as promtail makes them (a field the entry
// lacks gives no label).
func (r lokiRule) labels(e journalEntry, relabel []promtailRelabel) map[string]string {
	lbs := map[string]string{}
	for _, rl := range relabel {
		if v := e.str(rl.field); v != "" {
			lbs[rl.label] = v
		}
	}
	return lbs
}

// selects runs the rule on one entry: the group (the "by" labels) it counts
// toward, or nil when the rule drops it.
func (r lokiRule) selects(e journalEntry, relabel []promtailRelabel) (map[string]string, error) {
	lbs := r.labels(e, relabel)
	for _, m := range r.matchers {
		v, ok := lbs[m.name]
		if !ok || !m.re.MatchString(v) {
			return nil, nil
		}
	}
	line := e.str("MESSAGE")
	for _, st := range r.stages {
		ok, err := st(line, lbs)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, nil
		}
	}
	group := map[string]string{}
	for _, k := range r.by {
		group[k] = lbs[k]
	}
	return group, nil
}

// TestLokiRuleEvaluator holds the evaluator to what it claims: it parses the
// shipped rule, refuses what it does not know, and selects by writer.
func TestLokiRuleEvaluator(t *testing.T) {
	rule := shippedLokiRule(t)
	relabel := runbookRelabel(t)
	if rule.window != 15*time.Minute || strings.Join(rule.by, ",") != "host,user" {
		t.Errorf("rule: window %s, by %v", rule.window, rule.by)
	}
	for _, bad := range []string{
		`sum by (user) (count_over_time({a="b"} | json [5m])) > 0`,
		`sum by (user) (count_over_time({a!="b"} [5m])) > 0`,
		`sum by (user) (count_over_time({a="b"} |~ "x" [5m])) > 0`,
		`sum by (user) (count_over_time({a="b"} | label_format u="{{ ToLower .a }}" [5m])) > 0`,
		`sum by (user) (count_over_time({a="b"} [5m])) > 1`,
		`sum by (user) (rate({a="b"} [5m])) > 0`,
	} {
		if _, err := parseLokiRule(bad); err == nil {
			t.Errorf("the evaluator took %s", bad)
		}
	}
	entry := func(kv ...string) journalEntry {
		e := journalEntry{"SYSLOG_IDENTIFIER": "claude-auth-sync", "_HOSTNAME": "ws1"}
		for i := 0; i+1 < len(kv); i += 2 {
			e[kv[i]] = kv[i+1]
		}
		return e
	}
	for _, c := range []struct {
		e    journalEntry
		user string // "" = not selected
	}{
		{entry("MESSAGE", "user=alice FAIL x", "_SYSTEMD_UNIT", "claude-auth-sync-agent@alice.service", "_UID", "1001"), "alice"},
		{entry("MESSAGE", "user=alice FAIL x", "_SYSTEMD_UNIT", "claude-auth-sync@alice.service", "_UID", "1001"), "alice"},
		{entry("MESSAGE", "user=alice FAIL x", "_SYSTEMD_UNIT", "claude-auth-sync-provision.service", "_UID", "0"), "alice"},
		{entry("MESSAGE", "user=alice FAIL x", "_SYSTEMD_UNIT", "user@1001.service", "_SYSTEMD_USER_UNIT", "claude-auth-sync.service", "_UID", "1001"), "uid:1001"},
		{entry("MESSAGE", "user=alice OK x", "_SYSTEMD_UNIT", "claude-auth-sync-agent@alice.service", "_UID", "1001"), ""},
		{entry("MESSAGE", "user=alice FAIL x", "_SYSTEMD_UNIT", "claude-auth-sync-agent@mallory.service", "_UID", "1002"), ""},
		{entry("MESSAGE", "user=alice FAIL x", "_SYSTEMD_UNIT", "user@1002.service", "_SYSTEMD_USER_UNIT", "claude-auth-sync-agent@alice.service", "_UID", "1002"), ""},
		{entry("MESSAGE", "user=alice FAIL x", "_SYSTEMD_UNIT", "user@1001.service", "_SYSTEMD_USER_UNIT", "claude-auth-sync.service", "_UID", "1002"), ""},
		{entry("MESSAGE", "user=alice FAIL x", "_SYSTEMD_UNIT", "session-3.scope", "_UID", "1002", "SYSTEMD_UNIT", "claude-auth-sync-agent@alice.service"), ""},
		{entry("MESSAGE", "claude-auth-sync: FAIL", "_SYSTEMD_UNIT", "claude-auth-sync-provision.service", "_UID", "0"), ""},
	} {
		g, err := rule.selects(c.e, relabel)
		if err != nil {
			t.Fatalf("%v: %v", c.e, err)
		}
		if got := g["user"]; got != c.user || (g != nil && g["host"] != "ws1") {
			t.Errorf("%v: selected as %v; want user %q", c.e, g, c.user)
		}
	}
}
