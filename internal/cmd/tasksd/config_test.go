package main

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeFlags returns the rows of the README's flag table (section
// "Configuration (tasksd)"): flag name → default as written.
func readmeFlags(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration (tasksd)\n")
	if !ok {
		t.Fatal("README.md has no section \"## Configuration (tasksd)\"")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	row := regexp.MustCompile("^\\| `-([a-z0-9-]+)` \\| ([^|]*) \\| [^|]*\\S[^|]* \\|$")
	rows := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `-") {
			continue
		}
		m := row.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("README flag row is not | `-flag` | default | meaning |: %q", line)
			continue
		}
		if _, dup := rows[m[1]]; dup {
			t.Errorf("README lists -%s twice", m[1])
		}
		rows[m[1]] = strings.Trim(strings.TrimSpace(m[2]), "`")
	}
	if len(rows) == 0 {
		t.Fatal("no flag rows found in the README")
	}
	return rows
}

// readmeDefaults are the flags whose default the README writes in words,
// not as the flag package prints it.
var readmeDefaults = map[string]string{
	"workers":            "4 × CPUs",
	"tenant-queue":       "-queue`/4",
	"tenant-queue-bytes": "-queue-bytes`/4",
	"callbacks-per-host": "-callback-workers`/2",
	"tenant-callbacks":   "-callback-workers`×3/4",
}

// TestREADMEFlags: the README's flag table lists exactly the flags tasksd
// defines, each with the default the code applies.
func TestREADMEFlags(t *testing.T) {
	rows := readmeFlags(t)
	fs := newFlagSet(&config{})
	fs.VisitAll(func(f *flag.Flag) {
		doc, ok := rows[f.Name]
		if !ok {
			t.Errorf("-%s is not in the README's flag table", f.Name)
			return
		}
		delete(rows, f.Name)
		if want, ok := readmeDefaults[f.Name]; ok {
			if doc != want {
				t.Errorf("-%s: the README says default %q, want %q", f.Name, doc, want)
			}
			return
		}
		if !sameDefault(doc, f.DefValue) {
			t.Errorf("-%s: the README says default %q, the code %q", f.Name, doc, f.DefValue)
		}
	})
	for name := range rows {
		t.Errorf("the README lists -%s, which tasksd does not define", name)
	}
}

// sameDefault compares a README default with a flag's DefValue: "none" is
// the empty string, and durations compare by value ("10m" is "10m0s").
func sameDefault(doc, def string) bool {
	if doc == def || doc == "none" && def == "" {
		return true
	}
	a, err1 := time.ParseDuration(doc)
	b, err2 := time.ParseDuration(def)
	return err1 == nil && err2 == nil && a == b
}
