package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tasksapi/tasks/internal/storecopy"
)

// progress reports how far a copy has come on standard error: a bar
// redrawn in place on a terminal, a plain line every few seconds
// otherwise (a log, a pipe).
type progress struct {
	w        io.Writer
	what     string
	total    int
	terminal bool
	every    time.Duration
	start    time.Time
	last     time.Time
	drawn    bool
	read     int
}

func newProgress(w io.Writer, what string, total int) *progress {
	p := &progress{w: w, what: what, total: total, start: time.Now(), every: 5 * time.Second}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.terminal, p.every = true, 200*time.Millisecond
		}
	}
	p.last = p.start
	return p
}

func (p *progress) update(pr storecopy.Progress) {
	p.read = pr.Read
	if time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	p.draw()
}

func (p *progress) draw() {
	elapsed := time.Since(p.start)
	rate := float64(p.read) / max(elapsed.Seconds(), 1e-3)
	left := ""
	if p.total > p.read && rate > 0 {
		left = fmt.Sprintf(", about %s left", (time.Duration(float64(p.total-p.read)/rate) * time.Second).Round(time.Second))
	}
	pct := 100.0
	if p.total > 0 {
		pct = min(100, 100*float64(p.read)/float64(p.total))
	}
	if !p.terminal {
		fmt.Fprintf(p.w, "%s: %d of %d tasks (%.0f%%), %.0f tasks/s%s\n", p.what, p.read, p.total, pct, rate, left)
		return
	}
	const width = 30
	fill := int(pct / 100 * width)
	fmt.Fprintf(p.w, "\r%-6s [%s%s] %3.0f%% %d/%d tasks, %.0f tasks/s%s\x1b[K", p.what,
		strings.Repeat("#", fill), strings.Repeat(".", width-fill), pct, p.read, p.total, rate, left)
	p.drawn = true
}

// done ends the bar's line.
func (p *progress) done() {
	if p.terminal && p.drawn {
		p.draw()
		fmt.Fprintln(p.w)
	}
}
