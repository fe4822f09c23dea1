package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

const completionHelp = `Usage: claude-auth-sync completion bash|zsh|fish

Print a completion script for the shell: the commands and each command's
flags, made from the same command table as --help. The packages install them
where bash-completion, zsh and fish look:

  /usr/share/bash-completion/completions/claude-auth-sync
  /usr/share/zsh/vendor-completions/_claude-auth-sync
  /usr/share/fish/vendor_completions.d/claude-auth-sync.fish
`

func completionFlags(fs *flagSet) action {
	return func(args []string, stdout, stderr io.Writer) int {
		if code, ok := parseOnly(fs, args, stdout, stderr, completionHelp); !ok {
			return code
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "claude-auth-sync completion: name one shell: bash, zsh or fish")
			return exitUsage
		}
		t := completionTable()
		switch fs.Arg(0) {
		case "bash":
			writeBash(stdout, t)
		case "zsh":
			writeZsh(stdout, t)
		case "fish":
			writeFish(stdout, t)
		default:
			msg := fmt.Sprintf("no completion for %q", fs.Arg(0))
			if s := suggest(fs.Arg(0), []string{"bash", "zsh", "fish"}); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			fmt.Fprintf(stderr, "claude-auth-sync completion: %s (bash, zsh or fish)\n", msg)
			return exitUsage
		}
		return 0
	}
}

// completionSet is what the completion scripts offer.
type completionSet struct {
	cmds   []completionCmd
	global []flagDoc // the flags that may stand before a command
}

type completionCmd struct {
	name, summary string
	flags         []flagDoc
}

// completionTable is the visible commands and their flags; first the flags
// that may stand before a command (any command's, and --help, --version).
func completionTable() (t completionSet) {
	seen := map[string]bool{}
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		fs, _ := c.flagSet()
		docs := append(fs.docs(), flagDoc{name: "help", usage: "show this command's help", short: "show this command's help"})
		t.cmds = append(t.cmds, completionCmd{name: c.name, summary: c.summary, flags: docs})
		for _, d := range docs {
			if !seen[d.name] && d.name != "help" {
				seen[d.name] = true
				t.global = append(t.global, d)
			}
		}
	}
	sort.Slice(t.global, func(i, j int) bool { return t.global[i].name < t.global[j].name })
	t.global = append(t.global,
		flagDoc{name: "help", usage: "show the usage", short: "show the usage"},
		flagDoc{name: "version", usage: "print the version", short: "print the version"})
	return t
}

// valueFlags are the flags that take a value, as a shell case pattern.
func valueFlags(docs []flagDoc) string {
	var names []string
	for _, d := range docs {
		if d.value != "" {
			names = append(names, "--"+d.name)
		}
	}
	return strings.Join(names, "|")
}

func flagWords(docs []flagDoc) string {
	var w []string
	for _, d := range docs {
		w = append(w, "--"+d.name)
	}
	return strings.Join(w, " ")
}

// fileValue: a flag whose value is a path, so the shell completes files.
func fileValue(d flagDoc) bool {
	switch d.value {
	case "FILE", "DIR", "PROGRAM":
		return true
	}
	return false
}

func writeBash(w io.Writer, t completionSet) {
	var names []string
	for _, c := range t.cmds {
		names = append(names, c.name)
	}
	fmt.Fprintf(w, `# bash completion for claude-auth-sync; made by "claude-auth-sync completion bash".
_claude_auth_sync() {
	local cur prev cmd words i
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=
	[ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}
	cmd=
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--)
			# exec -- COMMAND ARG...: another program's command line.
			if [ "$cmd" = exec ]; then
				if ((COMP_CWORD == i + 1)); then
					COMPREPLY=($(compgen -c -- "$cur"))
				else
					COMPREPLY=($(compgen -f -- "$cur"))
				fi
				return 0
			fi
			;;
		--*=*) ;;
		%s) ((i++)) ;;
		-*) ;;
		*) [ -z "$cmd" ] && cmd=${COMP_WORDS[i]} ;;
		esac
	done
	case $prev in
`, valueFlags(t.global))
	// A flag's value: its choices, a path, or nothing to offer.
	var pathFlags, noneFlags []string
	choices := map[string][]string{}
	for _, d := range t.global {
		switch {
		case d.value == "":
		case len(d.choices) > 0:
			choices["--"+d.name] = d.choices
		case fileValue(d):
			pathFlags = append(pathFlags, "--"+d.name)
		default:
			noneFlags = append(noneFlags, "--"+d.name)
		}
	}
	for _, name := range sortedKeys(choices) {
		fmt.Fprintf(w, "\t%s) COMPREPLY=($(compgen -W '%s' -- \"$cur\")); return 0 ;;\n", name, strings.Join(choices[name], " "))
	}
	if len(pathFlags) > 0 {
		fmt.Fprintf(w, "\t%s) COMPREPLY=($(compgen -f -- \"$cur\")); return 0 ;;\n", strings.Join(pathFlags, "|"))
	}
	if len(noneFlags) > 0 {
		fmt.Fprintf(w, "\t%s) COMPREPLY=(); return 0 ;;\n", strings.Join(noneFlags, "|"))
	}
	fmt.Fprintf(w, "\tesac\n\tcase $cmd in\n\t\"\")\n\t\tif [[ $cur == -* ]]; then\n\t\t\twords=%q\n\t\telse\n\t\t\twords=%q\n\t\tfi\n\t\t;;\n",
		flagWords(t.global), strings.Join(names, " "))
	for _, c := range t.cmds {
		fmt.Fprintf(w, "\t%s) words=%q ;;\n", c.name, flagWords(c.flags))
	}
	fmt.Fprint(w, `	*) words= ;;
	esac
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
	return 0
}
complete -F _claude_auth_sync claude-auth-sync
`)
}

func sortedKeys(m map[string][]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// zshQuote quotes s as one single-quoted zsh word.
func zshQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// zshSpec is a _describe entry: word and description, a colon between them
// and escaped within them.
func zshSpec(word, desc string) string {
	return zshQuote(strings.ReplaceAll(word, ":", `\:`) + ":" + strings.ReplaceAll(desc, ":", `\:`))
}

func writeZsh(w io.Writer, t completionSet) {
	fmt.Fprint(w, `#compdef claude-auth-sync
# zsh completion for claude-auth-sync; made by "claude-auth-sync completion zsh".
_claude-auth-sync() {
	local cmd i
	local -a cmds opts
	cmds=(
`)
	for _, c := range t.cmds {
		fmt.Fprintf(w, "\t\t%s\n", zshSpec(c.name, c.summary))
	}
	fmt.Fprintf(w, "\t)\n\tfor ((i = 2; i < CURRENT; i++)); do\n\t\tcase $words[i] in\n\t\t--) [[ $cmd == exec ]] && { words=(\"${(@)words[i+1,-1]}\"); (( CURRENT -= i )); _normal; return; } ;;\n\t\t--*=*) ;;\n\t\t%s) ((i++)) ;;\n\t\t-*) ;;\n\t\t*) [[ -z $cmd ]] && cmd=$words[i] ;;\n\t\tesac\n\tdone\n", valueFlags(t.global))
	fmt.Fprint(w, "\tcase $words[CURRENT-1] in\n")
	for _, d := range t.global {
		switch {
		case d.value == "":
		case len(d.choices) > 0:
			fmt.Fprintf(w, "\t--%s) compadd -- %s; return ;;\n", d.name, strings.Join(d.choices, " "))
		case d.value == "DIR":
			fmt.Fprintf(w, "\t--%s) _files -/; return ;;\n", d.name)
		case fileValue(d):
			fmt.Fprintf(w, "\t--%s) _files; return ;;\n", d.name)
		default:
			fmt.Fprintf(w, "\t--%s) _message %s; return ;;\n", d.name, zshQuote(strings.ToLower(d.value)))
		}
	}
	fmt.Fprint(w, "\tesac\n\tcase $cmd in\n\t'')\n\t\tif [[ $PREFIX == -* ]]; then\n\t\t\topts=(\n")
	for _, d := range t.global {
		fmt.Fprintf(w, "\t\t\t\t%s\n", zshSpec("--"+d.name, d.short))
	}
	fmt.Fprint(w, "\t\t\t)\n\t\t\t_describe -t options option opts\n\t\telse\n\t\t\t_describe -t commands command cmds\n\t\tfi\n\t\treturn\n\t\t;;\n")
	for _, c := range t.cmds {
		fmt.Fprintf(w, "\t%s)\n\t\topts=(\n", c.name)
		for _, d := range c.flags {
			fmt.Fprintf(w, "\t\t\t%s\n", zshSpec("--"+d.name, d.short))
		}
		fmt.Fprint(w, "\t\t)\n\t\t;;\n")
	}
	fmt.Fprint(w, `	*) return 1 ;;
	esac
	_describe -t options option opts
}
_claude-auth-sync "$@"
`)
}

// fishQuote quotes s for fish: single quotes, with \ and ' escaped.
func fishQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

func writeFish(w io.Writer, t completionSet) {
	fmt.Fprintln(w, `# fish completion for claude-auth-sync; made by "claude-auth-sync completion fish".`)
	fmt.Fprintln(w, "complete -c claude-auth-sync -f")
	fmt.Fprintln(w, "complete -c claude-auth-sync -n __fish_use_subcommand -s v -d 'print the version'")
	for _, d := range t.global {
		fmt.Fprintf(w, "complete -c claude-auth-sync -n __fish_use_subcommand -l %s%s -d %s\n", d.name, fishValue(d), fishQuote(d.short))
	}
	for _, c := range t.cmds {
		fmt.Fprintf(w, "complete -c claude-auth-sync -n __fish_use_subcommand -a %s -d %s\n", c.name, fishQuote(c.summary))
	}
	for _, c := range t.cmds {
		cond := fishQuote("__fish_seen_subcommand_from " + c.name)
		for _, d := range c.flags {
			fmt.Fprintf(w, "complete -c claude-auth-sync -n %s -l %s%s -d %s\n", cond, d.name, fishValue(d), fishQuote(d.short))
		}
	}
}

// fishValue says what a flag's value is: none, one of a few, a path, or
// something to type.
func fishValue(d flagDoc) string {
	switch {
	case d.value == "":
		return ""
	case len(d.choices) > 0:
		return " -x -a " + fishQuote(strings.Join(d.choices, " "))
	case fileValue(d):
		return " -r -F"
	}
	return " -x"
}
