package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// flagSet is a command's flags plus what the standard package cannot say:
// which flags are internal (parsed, never shown) and which take one of a few
// values (for completion). --help, the man page and the completion scripts
// all read it, so they cannot disagree.
type flagSet struct {
	*flag.FlagSet
	hidden  map[string]bool
	choices map[string][]string
}

func newFlagSet(name string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), hidden: map[string]bool{}, choices: map[string][]string{}}
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// hide keeps flags working but out of help, man page and completion.
func (fs *flagSet) hide(names ...string) {
	for _, n := range names {
		fs.hidden[n] = true
	}
}

// flagDoc is one visible flag as the help, man page and completions show it.
type flagDoc struct {
	name  string
	value string // "" for a boolean flag, else the placeholder (FILE, DURATION, …)
	usage string // the full text, with env and default
	short string // the text before the parenthesis, for completion menus
	// choices are the values it takes, when there are only a few.
	choices []string
}

// docs lists the visible flags in name order.
func (fs *flagSet) docs() []flagDoc {
	var out []flagDoc
	fs.VisitAll(func(f *flag.Flag) {
		if fs.hidden[f.Name] {
			return
		}
		value, usage := flag.UnquoteUsage(f)
		if isBool(f) {
			value = ""
		} else {
			value = placeholder(value)
		}
		if d := f.DefValue; !isZeroDefault(d) && !strings.Contains(usage, "default") {
			usage += " (default: " + d + ")"
		}
		short := usage
		if i := strings.Index(short, " ("); i > 0 {
			short = short[:i]
		}
		out = append(out, flagDoc{name: f.Name, value: value, usage: usage, short: short, choices: fs.choices[f.Name]})
	})
	return out
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func isZeroDefault(v string) bool {
	switch v {
	case "", "0", "false", "0s":
		return true
	}
	return false
}

// placeholder turns flag.UnquoteUsage's name into the help's: FILE, DURATION, N.
func placeholder(name string) string {
	switch name {
	case "int", "uint":
		return "N"
	case "", "value":
		return "VALUE"
	}
	return strings.ToUpper(name)
}

// printFlags writes the visible flags, long form, one per entry.
func (fs *flagSet) printFlags(w io.Writer) {
	docs := fs.docs()
	if len(docs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nFlags:")
	for _, d := range docs {
		head := "--" + d.name
		if d.value != "" {
			head += " " + d.value
		}
		fmt.Fprintf(w, "  %s\n        %s\n", head, d.usage)
	}
}

// takesValue: the flag exists here and is not boolean.
func (fs *flagSet) takesValue(name string) bool {
	f := fs.Lookup(name)
	return f != nil && !isBool(f)
}

// errUnknownFlag is the name in flag's "flag provided but not defined: -x".
func errUnknownFlag(err error) (string, bool) {
	const p = "flag provided but not defined: -"
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return "", false
	}
	name, ok := strings.CutPrefix(err.Error(), p)
	return name, ok
}

// suggest returns the candidate closest to typed, if it is close enough to
// be what was meant: a slip of a key or two, or a prefix.
func suggest(typed string, candidates []string) string {
	limit := 2 // the most edits that still look like a slip
	if len(typed) <= 4 {
		limit = 1
	}
	best, bestDist := "", limit+1
	for _, c := range candidates {
		d := editDistance(typed, c)
		if len(typed) >= 3 && strings.HasPrefix(c, typed) && d > 1 {
			d = 1 // "stat" for "status"
		}
		if d < bestDist && d < len(typed) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance counts insertions, deletions, substitutions and swaps of
// neighbours (optimal string alignment).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
