package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// writeTable prints the report as an aligned table with the references and
// settings below it.
func writeTable(out io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tours\treference\tratio\ttarget\tpass\tallocs/op ours/ref")
	for _, r := range rep.Results {
		pass := "yes"
		switch {
		case r.Info:
			pass = "-"
		case !r.Pass:
			pass = "NO"
		}
		allocs := "-"
		if r.OursAllocs > 0 || r.RefAllocs > 0 {
			allocs = fmt.Sprintf("%.0f / %.0f", r.OursAllocs, r.RefAllocs)
		}
		fmt.Fprintf(tw, "%4s. %s\t%s\t%s\t%.2fx\t%s\t%s\t%s\n", r.Row, r.Scenario, value(r.Ours, r.Unit),
			value(r.Reference, r.Unit), r.Ratio, r.Target, pass, allocs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nreferences:")
	for _, r := range rep.Results {
		cpu := ""
		if r.OursCPU > 0 || r.RefCPU > 0 {
			cpu = fmt.Sprintf(" (CPU µs/op ours/ref: %.0f / %.0f)", r.OursCPU, r.RefCPU)
		}
		fmt.Fprintf(out, "%4s. %s%s\n", r.Row, r.RefName, cpu)
	}
	s := rep.Settings
	fmt.Fprintf(out, "\n%s, %d CPUs (GOMAXPROCS %d), %s, %s; %d and %d tasks, concurrency %d, "+
		"%.1fs per side in %d interleaved rounds (medians); payload %.0f bytes per task\n",
		rep.Machine.CPU, rep.Machine.NumCPU, rep.Machine.GOMAXPROCS, rep.Machine.GoVersion, rep.Machine.OS,
		s.Rows, s.SmallRows, s.Concurrency, s.DurationSec, s.Rounds, s.PayloadPer)
	if err := writeLatency(out, rep.Latency); err != nil {
		return err
	}
	if len(rep.Chart) > 0 {
		fmt.Fprintln(out, "\nin-process latency (handler.ServeHTTP, serial), µs/op and allocs/op:")
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "store\taction\ttasks\tµs/op\tallocs/op")
		for _, p := range rep.Chart {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.0f\n", p.Store, p.Action, p.Rows, p.Micros, p.Allocs)
		}
		return tw.Flush()
	}
	return nil
}

// value formats v in unit.
func value(v float64, unit string) string {
	switch unit {
	case "ops/s":
		return fmt.Sprintf("%s ops/s", thousands(v))
	case "µs/op":
		return fmt.Sprintf("%.1f µs/op", v)
	case "bytes/task":
		return fmt.Sprintf("%.0f B/task", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	}
	return fmt.Sprintf("%g %s", v, unit)
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// chartSVG draws the latency of retrieve and retrieve_batch against the
// number of stored tasks (log scale), one line per store and action.
func chartSVG(points []Point) []byte {
	const (
		w, h                     = 720, 420
		left, right, top, bottom = 70, 200, 40, 60
	)
	var rows []int
	maxY := 0.0
	for _, p := range points {
		if !slices.Contains(rows, p.Rows) {
			rows = append(rows, p.Rows)
		}
		maxY = max(maxY, p.Micros)
	}
	slices.Sort(rows)
	maxY = niceCeil(maxY)
	lx, hx := math.Log10(float64(max(1, firstOr(rows, 1)))), math.Log10(float64(max(1, lastOr(rows, 10))))
	if hx == lx {
		hx = lx + 1
	}
	x := func(n int) float64 {
		return left + (math.Log10(float64(n))-lx)/(hx-lx)*float64(w-left-right)
	}
	y := func(v float64) float64 { return float64(h-bottom) - v/maxY*float64(h-top-bottom) }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">Tasks API latency against stored tasks (handler.ServeHTTP, serial)</text>`+"\n", left)
	// Axes and grid.
	for i := 0; i <= 5; i++ {
		v := maxY * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), w-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(v)+4, v)
	}
	for _, n := range rows {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(n), top, x(n), h-bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(n), h-bottom+18, count(n))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, h-bottom)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">stored tasks (log scale)</text>`+"\n", (left+w-right)/2, h-bottom+40)
	fmt.Fprintf(&b, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">µs per request</text>`+"\n", (top+h-bottom)/2, (top+h-bottom)/2)
	// Lines.
	series := []struct{ store, action, color, dash string }{
		{"sqlite", "retrieve_batch", "#1f77b4", ""},
		{"sqlite", "retrieve", "#1f77b4", "6 4"},
		{"memory", "retrieve_batch", "#d62728", ""},
		{"memory", "retrieve", "#d62728", "6 4"},
	}
	for i, s := range series {
		var pts []string
		for _, p := range points {
			if p.Store == s.store && p.Action == s.action {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.Rows), y(p.Micros)))
			}
		}
		if len(pts) == 0 {
			continue
		}
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, dash, strings.Join(pts, " "))
		for _, pt := range pts {
			cx, cy, _ := strings.Cut(pt, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", cx, cy, s.color)
		}
		ly := top + 20 + i*22
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", w-right+15, ly, w-right+45, ly, s.color, dash)
		label := "sqlitestore"
		if s.store == "memory" {
			label = "memstore"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s %s</text>`+"\n", w-right+50, ly+4, label, s.action)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func firstOr(v []int, def int) int {
	if len(v) == 0 {
		return def
	}
	return v[0]
}

func lastOr(v []int, def int) int {
	if len(v) == 0 {
		return def
	}
	return v[len(v)-1]
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// writeLatency prints the open-loop table.
func writeLatency(out io.Writer, ls []Latency) error {
	if len(ls) == 0 {
		return nil
	}
	fmt.Fprintf(out, "\ntail latency under an open loop at %.0f%% of the closed-loop maximum (%.0fs each), ms from the intended send time:\n",
		100*ls[0].Load, ls[0].Seconds)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmax/s\trate/s\tcount\tp50\tp90\tp99\tp99.9\tmax\tp99/p50\ttarget\tpass\tGCs (max pause)\tsched wait p99/p99.9\tCPU\tload avg")
	for _, l := range ls {
		pass := "yes"
		if !l.Pass {
			pass = "NO"
		}
		errs := ""
		if l.Errors > 0 {
			errs = fmt.Sprintf(" (%d errors: %s)", l.Errors, l.FirstErr)
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%d\t%.3g\t%.3g\t%.3g\t%.3g\t%.3g\t%.1fx\t%s\t%s\t%d (%.2g)\t%.2g / %.2g\t%.2f\t%.1f\n", l.Scenario, errs,
			thousands(l.MaxRate), thousands(l.Rate), l.Count, l.P50, l.P90, l.P99, l.P999, l.Max,
			l.P99/max(l.P50, 1e-9), l.Target, pass, l.GCs, l.GCPauseMax, l.SchedP99, l.SchedP999, l.CPU, l.LoadAvg)
	}
	return tw.Flush()
}

// latencySVG draws the latency distribution of each open-loop scenario as
// HdrHistogram's plots do: the percentile on a log axis (x = 1/(1-p), so
// that 90%, 99%, 99.9% and 99.99% are equally spaced) against the latency,
// here on a log axis too, so that the median and the tail both show.
func latencySVG(ls []Latency) []byte {
	const (
		w, h                     = 880, 440
		left, right, top, bottom = 70, 300, 40, 60
	)
	lo, hi := math.Inf(1), math.Inf(-1)
	maxX := 1.0
	for _, l := range ls {
		for _, p := range l.Curve {
			if p.Ms > 0 {
				lo, hi = min(lo, p.Ms), max(hi, p.Ms)
			}
			maxX = max(maxX, 1/(1-p.Percentile/100))
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0.1, 1
	}
	ly, hy := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if hy <= ly {
		hy = ly + 1
	}
	hx := max(2, math.Ceil(math.Log10(maxX)))
	x := func(pct float64) float64 {
		v := math.Log10(1 / math.Max(1-pct/100, 1e-12))
		return left + v/hx*float64(w-left-right)
	}
	y := func(ms float64) float64 {
		v := (math.Log10(math.Max(ms, math.Pow(10, ly))) - ly) / (hy - ly)
		return float64(h-bottom) - v*float64(h-top-bottom)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	load := 0.0
	if len(ls) > 0 {
		load = ls[0].Load
	}
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">Latency by percentile, open loop at %.0f%% of the closed-loop maximum</text>`+"\n", left, 100*load)
	for e := ly; e <= hy; e++ {
		v := math.Pow(10, e)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), w-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(v)+4, v)
	}
	for e := 0.0; e <= hx; e++ {
		pct := 100 * (1 - math.Pow(10, -e))
		label := strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.4f", pct), "0"), ".") + "%"
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(pct), top, x(pct), h-bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(pct), h-bottom+18, label)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, h-bottom)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">percentile (log scale of 1/(1−p))</text>`+"\n", (left+w-right)/2, h-bottom+40)
	fmt.Fprintf(&b, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">latency, ms (log scale)</text>`+"\n", (top+h-bottom)/2, (top+h-bottom)/2)
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}
	for i, l := range ls {
		color := colors[i%len(colors)]
		var pts []string
		for _, p := range l.Curve {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.Percentile), y(p.Ms)))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		}
		ly := top + 20 + i*22
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", w-right+15, ly, w-right+45, ly, color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", w-right+50, ly+4, xmlEscape(shortName(l.Scenario)))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// shortName is a scenario's name for the chart's legend.
func shortName(s string) string {
	if i := strings.Index(s, " ("); i > 0 && len(s) > 32 {
		return s[:i]
	}
	return s
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
