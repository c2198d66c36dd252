package main

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// otherCommands are the subcommands besides the client's, for completion.
var otherCommands = []struct{ name, summary string }{
	{"example", "the two-node demonstration of the seed"},
	{"version", "print the version"},
	{"keygen", "write a new libp2p swarm key"},
	{"reincarnate", "give a copied data directory a new replica ID"},
	{"repair", "salvage a damaged store and re-fetch what it lost"},
	{"completion", "print a bash or zsh completion script"},
}

// fileFlags are the flags whose value is a file name.
var fileFlags = map[string]bool{"f": true, "token-file": true}

// completion prints the completion script for the shell args[0] names,
// generated from the client's command table.
func completion(args []string, stdout io.Writer) error {
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		return usageErr("usage: crdt-catalog completion bash|zsh")
	}
	if args[0] == "bash" {
		_, err := io.WriteString(stdout, bashCompletion())
		return err
	}
	_, err := io.WriteString(stdout, zshCompletion())
	return err
}

// commandFlags returns cmd's flags in the order PrintDefaults lists them.
func commandFlags(cmd *clientCommand) []*flag.Flag {
	fs := cmd.newFlagSet(&clientOpts{}, io.Discard, func(string) string { return "" })
	var out []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { out = append(out, f) })
	return out
}

// bashCompletion returns a bash script: subcommands in the first place,
// then the command's flags (as --name), file names where a flag or
// backup and restore take a file, and the values of -o.
func bashCompletion() string {
	var b strings.Builder
	names := make([]string, 0, len(clientCommands)+len(otherCommands))
	for _, c := range clientCommands {
		names = append(names, c.name)
	}
	for _, c := range otherCommands {
		names = append(names, c.name)
	}
	fmt.Fprintf(&b, `# bash completion for crdt-catalog; load with: source <(crdt-catalog completion bash)
_crdt_catalog() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} flags=""
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "%s" -- "$cur"))
        return
    fi
    case $prev in
        -o|--o) COMPREPLY=($(compgen -W "table json ndjson" -- "$cur")); return ;;
`, strings.Join(names, " "))
	var fileOpts []string
	for _, f := range slices.Sorted(maps.Keys(fileFlags)) {
		fileOpts = append(fileOpts, "-"+f, "--"+f)
	}
	fmt.Fprintf(&b, "        %s) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", strings.Join(fileOpts, "|"))
	b.WriteString("    esac\n    case ${COMP_WORDS[1]} in\n")
	for i := range clientCommands {
		var fl []string
		for _, f := range commandFlags(&clientCommands[i]) {
			fl = append(fl, dashName(f.Name))
		}
		fmt.Fprintf(&b, "        %s) flags=\"%s\" ;;\n", clientCommands[i].name, strings.Join(fl, " "))
	}
	b.WriteString(`        completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [[ ${COMP_WORDS[1]} == backup || ${COMP_WORDS[1]} == restore ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -F _crdt_catalog crdt-catalog
`)
	return b.String()
}

// zshCompletion returns a zsh script for compinit (as the file
// _crdt-catalog on $fpath) or to source: subcommands with their summary,
// then each command's flags with their usage.
func zshCompletion() string {
	var b strings.Builder
	b.WriteString(`#compdef crdt-catalog
# zsh completion for crdt-catalog; load with: source <(crdt-catalog completion zsh)
# (after compinit), or save as _crdt-catalog in a directory of $fpath.
_crdt-catalog() {
    local -a commands
    commands=(
`)
	for _, c := range clientCommands {
		fmt.Fprintf(&b, "        '%s:%s'\n", c.name, zshQuote(c.summary))
	}
	for _, c := range otherCommands {
		fmt.Fprintf(&b, "        '%s:%s'\n", c.name, zshQuote(c.summary))
	}
	b.WriteString(`    )
    if (( CURRENT == 2 )); then
        _describe -t commands 'crdt-catalog command' commands
        return
    fi
    case $words[2] in
`)
	for i := range clientCommands {
		c := &clientCommands[i]
		fmt.Fprintf(&b, "        %s)\n            _arguments \\\n", c.name)
		for _, f := range commandFlags(c) {
			action := ":value:"
			switch {
			case f.Name == "o":
				action = ":output:(table json ndjson)"
			case fileFlags[f.Name]:
				action = ":file:_files"
			case isBoolFlag(f):
				action = ""
			}
			fmt.Fprintf(&b, "                '%s[%s]%s' \\\n", dashName(f.Name), zshQuote(f.Usage), action)
		}
		arg := "'*:argument:'"
		if c.name == "backup" || c.name == "restore" {
			arg = "'1:file:_files'"
		}
		fmt.Fprintf(&b, "                %s\n            ;;\n", arg)
	}
	b.WriteString(`        completion) _arguments '1:shell:(bash zsh)' ;;
    esac
}
if [[ $funcstack[1] == _crdt-catalog ]]; then
    _crdt-catalog "$@"
else
    compdef _crdt-catalog crdt-catalog
fi
`)
	return b.String()
}

// dashName is how completion offers a flag: -o, --endpoint (the flag
// package takes one dash or two for either).
func dashName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// zshQuote makes s safe inside a single-quoted zsh _arguments or
// _describe spec.
func zshQuote(s string) string {
	return strings.NewReplacer("'", `'\''`, "[", `\[`, "]", `\]`, ":", `\:`).Replace(s)
}

// isBoolFlag reports whether f takes no value.
func isBoolFlag(f *flag.Flag) bool {
	bf, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && bf.IsBoolFlag()
}
