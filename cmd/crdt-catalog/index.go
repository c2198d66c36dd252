package main

import (
	"fmt"
	"slices"
	"strings"
)

// indexList is the repeatable -index flag: each value is
// COLLECTION:FIELD,FIELD... (several separated by ';', as the environment
// gives them), and a collection named again adds fields. The first Set
// replaces what the environment set.
type indexList struct {
	byColl map[string][]string
	set    bool
}

func (l *indexList) String() string {
	if l == nil {
		return ""
	}
	var specs []string
	for _, c := range sortedColls(l.byColl) {
		specs = append(specs, c+":"+strings.Join(l.byColl[c], ","))
	}
	return strings.Join(specs, ";")
}

func (l *indexList) Set(v string) error {
	if !l.set {
		l.byColl, l.set = map[string][]string{}, true
	}
	for _, spec := range strings.Split(v, ";") {
		if spec = strings.TrimSpace(spec); spec == "" {
			continue
		}
		coll, fields, ok := strings.Cut(spec, ":")
		coll = strings.TrimSpace(coll)
		if !ok || coll == "" {
			return fmt.Errorf("index %q: want COLLECTION:FIELD,FIELD (comma-separated fields)", spec)
		}
		for _, f := range strings.Split(fields, ",") {
			if f = strings.TrimSpace(f); f != "" && !slices.Contains(l.byColl[coll], f) {
				l.byColl[coll] = append(l.byColl[coll], f)
			}
		}
		if len(l.byColl[coll]) == 0 {
			return fmt.Errorf("index %q: no field", spec)
		}
	}
	return nil
}

func sortedColls(m map[string][]string) []string {
	cs := make([]string, 0, len(m))
	for c := range m {
		cs = append(cs, c)
	}
	slices.Sort(cs)
	return cs
}
