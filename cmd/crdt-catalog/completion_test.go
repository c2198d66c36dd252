package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCompletion_Scripts: both scripts name every command and every flag
// of each client command; bash (and zsh, where installed) parse them.
func TestCompletion_Scripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh"} {
		var out bytes.Buffer
		if err := run(t.Context(), []string{"completion", shell}, &out, &out, func(string) string { return "" }); err != nil {
			t.Fatal(err)
		}
		script := out.String()
		for _, c := range clientCommands {
			if !strings.Contains(script, c.name) {
				t.Errorf("%s script lacks the command %s", shell, c.name)
			}
			for _, f := range commandFlags(&c) {
				if !strings.Contains(script, dashName(f.Name)) {
					t.Errorf("%s script lacks %s's flag %s", shell, c.name, dashName(f.Name))
				}
			}
		}
		for _, c := range otherCommands {
			if !strings.Contains(script, c.name) {
				t.Errorf("%s script lacks the command %s", shell, c.name)
			}
		}
		sh, err := exec.LookPath(shell)
		if err != nil {
			t.Logf("%s not installed: its script is not parsed", shell)
			continue
		}
		file := filepath.Join(t.TempDir(), "completion."+shell)
		if err := os.WriteFile(file, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command(sh, "-n", file).CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", shell, err, b)
		}
	}
	if err := run(t.Context(), []string{"completion", "fish"}, &bytes.Buffer{}, &bytes.Buffer{}, func(string) string { return "" }); exitCode(err) != exitUsage {
		t.Errorf("completion fish: %v", err)
	}
}

// TestCompletion_Bash: the bash script completes commands, flags, the
// values of -o and file names.
func TestCompletion_Bash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not installed")
	}
	var out bytes.Buffer
	if err := completion([]string{"bash"}, &out); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "completion.bash")
	if err := os.WriteFile(script, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "backup.state"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		words []string
		want  []string
	}{
		{[]string{"crdt-catalog", "ba"}, []string{"backup"}},
		{[]string{"crdt-catalog", "re"}, []string{"reincarnate", "repair", "restore"}},
		{[]string{"crdt-catalog", "query", "--a"}, []string{"--after", "--all"}},
		{[]string{"crdt-catalog", "add", "--cr"}, []string{"--create"}},
		{[]string{"crdt-catalog", "get", "-o", "n"}, []string{"ndjson"}},
		{[]string{"crdt-catalog", "restore", "back"}, []string{"backup.state"}},
		{[]string{"crdt-catalog", "completion", ""}, []string{"bash", "zsh"}},
	} {
		words := strings.Join(c.words, " ")
		cmd := exec.Command(bash, append([]string{"-c", `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($#-1)); ` +
			`_crdt_catalog; printf '%s\n' "${COMPREPLY[@]}"`, "bash", script}, c.words...)...)
		cmd.Dir = dir
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", words, err, b)
		}
		got := strings.Fields(string(b))
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("%q completes to %q, want %q", words, got, c.want)
		}
	}
}
