package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// exitWord starts a mention of exit statuses in prose: "exit 78", "exits 2",
// "exited 78", "Exit status: 0 …, 1 …", "their exit code (2 usage, …".
var exitWord = regexp.MustCompile(`(?i)\bexit(?:s|ed)?(?:\s+(?:status|code)(?:es|s)?)?:?\s+(?:\(|with\s+)?(\d+)\b`)

// nextItem: a list of exit statuses goes on after ", ", " and ", " or "
// when a number follows.
var nextItem = regexp.MustCompile(`^(?:,\s*|\s+and\s+|\s+or\s+)(\d+)\b`)

// endItem ends a mention: the end of a sentence, a clause or a table cell.
var endItem = regexp.MustCompile(`^(?:[.;:|](?:\s|$)|\n\n|\|)`)

type exitMention struct {
	code int
	desc string // the words after the number, up to the next item
	at   string // where it was found, for the error
}

// exitMentions finds every mention of exit statuses in text and what each
// says the status means.
func exitMentions(text string) []exitMention {
	var out []exitMention
	for _, m := range exitWord.FindAllStringSubmatchIndex(text, -1) {
		pos := m[2]
		// A lone mention may be explained just before it, in its sentence:
		// "`WARN … backup pending`, exit 75".
		before := text[max(0, m[0]-100):m[0]]
		if k := strings.LastIndexAny(before, ".|\n"); k >= 0 {
			before = before[k+1:]
		}
		for {
			numEnd := pos
			for numEnd < len(text) && text[numEnd] >= '0' && text[numEnd] <= '9' {
				numEnd++
			}
			code, _ := strconv.Atoi(text[pos:numEnd])
			i := numEnd
			next := -1
			for ; i < len(text) && i-numEnd < 400; i++ {
				if endItem.MatchString(text[i:]) {
					break
				}
				if n := nextItem.FindStringSubmatchIndex(text[i:]); n != nil {
					next = i + n[2]
					break
				}
			}
			line := 1 + strings.Count(text[:pos], "\n")
			out = append(out, exitMention{code: code, desc: before + " " + text[numEnd:i], at: "line " + strconv.Itoa(line)})
			before = ""
			if next < 0 {
				break
			}
			pos = next
		}
	}
	return out
}

// helpStatusLine is a line of a help text's table of exit statuses: "  78 configuration error".
var helpStatusLine = regexp.MustCompile(`(?m)^\s+(\d+)\s+(\S.*)$`)

var wordRE = regexp.MustCompile(`[a-z][a-z-]*`)

// significant are the words of s that say something: "ok", "fail", and words
// of four letters or more.
func significant(s string) []string {
	var out []string
	for _, w := range wordRE.FindAllString(strings.ToLower(s), -1) {
		if w == "ok" || w == "fail" || len(w) >= 4 && !slices.Contains([]string{"that", "this", "with", "when", "from", "they", "until", "then"}, w) {
			out = append(out, w)
		}
	}
	return out
}

// exitVocabulary: for each exit status the program has, the words its own
// texts (the exit-status table of the usage and the man page, and every
// command's help) use for it.
func exitVocabulary() map[int]map[string]bool {
	voc := map[int]map[string]bool{}
	add := func(code int, desc string) {
		if voc[code] == nil {
			voc[code] = map[string]bool{}
		}
		for _, w := range significant(desc) {
			voc[code][w] = true
		}
	}
	for _, e := range exitCodes {
		add(e.code, e.meaning)
	}
	known := func(code int) bool { return voc[code] != nil }
	for _, c := range commands() {
		for _, m := range exitMentions(c.help) {
			if known(m.code) {
				add(m.code, m.desc)
			}
		}
		for _, m := range helpStatusLine.FindAllStringSubmatch(c.help, -1) {
			if code, _ := strconv.Atoi(m[1]); known(code) {
				add(code, m[2])
			}
		}
	}
	return voc
}

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every exit status the runbook and the shipped config name is one the
// program has, said with the words the program's own help uses for it.
func TestRunbookExitCodes(t *testing.T) {
	voc := exitVocabulary()
	for _, doc := range []string{"docs/runbook.md", "packaging/config/config", "README.md"} {
		ms := exitMentions(repoFile(t, doc))
		if len(ms) == 0 {
			t.Errorf("%s: no exit status found; the parser is broken", doc)
		}
		for _, m := range ms {
			words, ok := voc[m.code]
			if !ok {
				t.Errorf("%s %s: exit %d, which the program never returns (it has %v)", doc, m.at, m.code, codesOf())
				continue
			}
			said := significant(m.desc)
			if !slices.ContainsFunc(said, func(w string) bool { return words[w] }) {
				t.Errorf("%s %s: exit %d described as %q; the program's words for it: %v", doc, m.at, m.code, strings.TrimSpace(m.desc), sortedWords(words))
			}
		}
	}
}

// The runbook's restart policy names exactly the statuses the agent units do
// not restart on.
func TestRunbookRestartPolicy(t *testing.T) {
	prevent := regexp.MustCompile(`(?m)^RestartPreventExitStatus=(.*)$`)
	want := map[int]bool{}
	for _, unit := range []string{"claude-auth-sync.service", "claude-auth-sync-agent@.service"} {
		m := prevent.FindStringSubmatch(repoFile(t, filepath.Join("packaging", "systemd", unit)))
		if m == nil {
			t.Fatalf("%s has no RestartPreventExitStatus=", unit)
		}
		for _, f := range strings.Fields(m[1]) {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s: RestartPreventExitStatus=%s", unit, m[1])
			}
			want[n] = true
		}
	}
	rb := repoFile(t, "docs/runbook.md")
	i := strings.Index(rb, "- **Restart policy.**")
	if i < 0 {
		t.Fatal("the runbook has no Restart policy paragraph")
	}
	para := rb[i:]
	if j := strings.Index(para[2:], "\n- "); j >= 0 {
		para = para[:j+2]
	}
	got := map[int]bool{}
	for _, m := range exitMentions(para) {
		got[m.code] = true
	}
	if len(got) != len(want) {
		t.Errorf("the runbook's restart policy names exit statuses %v; the units do not restart on %v", sortedInts(got), sortedInts(want))
	}
	for n := range want {
		if !got[n] {
			t.Errorf("the runbook's restart policy names exit statuses %v; the units do not restart on %v", sortedInts(got), sortedInts(want))
			break
		}
	}
}

// The runbook's alert table quotes lines the program writes: every quoted
// fragment of a row's first cell is in the program's source, pieces split at
// "…" (where the line has a value).
func TestRunbookAlertTableQuotesTheCode(t *testing.T) {
	rb := repoFile(t, "docs/runbook.md")
	i := strings.Index(rb, "| the FAIL says |")
	if i < 0 {
		t.Fatal("the runbook has no alert table")
	}
	table := rb[i:]
	table = table[:strings.Index(table, "\n\n")]
	var src strings.Builder
	for _, dir := range []string{"cmd/claude-auth-sync", "sync"} {
		err := filepath.WalkDir(filepath.Join("..", "..", dir), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			src.Write(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	code := strings.ReplaceAll(src.String(), "`", "'")
	quoted := regexp.MustCompile("`([^`]+)`")
	rows := 0
	for _, line := range strings.Split(table, "\n")[2:] {
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			continue
		}
		rows++
		first := strings.TrimPrefix(strings.TrimSpace(cells[1]), "provision: ")
		for _, q := range quoted.FindAllStringSubmatch(first, -1) {
			// Values are "…" or <user>; a status word is not part of the message; a
			// "label: value" of status is printed as two strings.
			for _, piece := range regexp.MustCompile(`…|<user>|: `).Split(q[1], -1) {
				piece = strings.TrimSpace(strings.ReplaceAll(piece, "`", "'"))
				for _, st := range []string{"OK ", "WARN ", "FAIL ", "SKIP "} {
					piece = strings.TrimPrefix(piece, st)
				}
				piece = strings.Trim(piece, " :;(),")
				if len(piece) < 3 || strings.HasPrefix(piece, "/") || strings.HasPrefix(piece, "~") {
					continue
				}
				if !strings.Contains(code, piece) {
					t.Errorf("the alert table quotes %q (row %q); the program never writes it", piece, first)
				}
			}
		}
	}
	if rows < 5 {
		t.Errorf("the alert table has %d rows; the parser is broken", rows)
	}
}

func codesOf() []int {
	var out []int
	for _, e := range exitCodes {
		out = append(out, e.code)
	}
	return out
}

func sortedWords(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedInts(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
