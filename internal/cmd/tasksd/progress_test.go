package main

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/tasksapi/tasks/internal/storecopy"
)

// Off a terminal, progress is plain lines, at most one every 5 s: here
// the interval is zeroed to see each.
func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, "copy", 1000)
	if p.terminal {
		t.Fatal("a buffer is taken for a terminal")
	}
	p.update(storecopy.Progress{Read: 100}) // within the interval: nothing
	if b.Len() != 0 {
		t.Fatalf("a line before the interval passed: %q", b.String())
	}
	p.every = 0
	p.update(storecopy.Progress{Read: 250})
	p.done()
	line := regexp.MustCompile(`^copy: 250 of 1000 tasks \(25%\), \d+ tasks/s, about \S+ left\n$`)
	if !line.MatchString(b.String()) {
		t.Fatalf("progress line %q", b.String())
	}
}
