package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the RSS child process, as the
// command does.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(child(os.Stdout))
	}
	os.Exit(m.Run())
}

// TestRun runs every scenario on tiny datasets and checks the report: all
// rows present with finite, positive numbers, the table, the JSON and the
// chart well formed. It checks no target: tiny datasets and a loaded test
// machine say nothing about them.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	cfg := config{
		Rows: 3000, Small: 1200, Concurrency: 4, Duration: 40 * time.Millisecond, Rounds: 2,
		Dir: dir, SVG: filepath.Join(dir, "bench.svg"), deliveryBatch: 50, PG: os.Getenv("TASKS_PG_URL"),
		Load: 0.5, TailDuration: 200 * time.Millisecond, LatencySVG: filepath.Join(dir, "latency.svg"),
		JSONFile: filepath.Join(dir, "bench.json"),
	}
	if err := cfg.finish(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{
		"sqlitestore create", "sqlitestore get by id at 3k", "sqlitestore find by user, limit 12: 3k vs 1200",
		"memstore find by user", "sqlitestore concurrent create, 64 clients", "HTTP retrieve by id at 3k",
		"HTTP retrieve_batch by user at 3k", "HTTP retrieve_batch by application holding all 3k, with count",
		"callback submit (Wrap)", "callback delivery", "memstore memory", "sqlitestore process RSS", "sqlitestore disk",
		"recorder alone: callback submit (Wrap) over memstore", "recorder alone: callback delivery (Recorder over memstore)",
		"console list page at 3k (limit 25, with count)", "console list of failed callbacks at 3k (limit 25, with count)",
		"tasksd copy SQLite → SQLite, 3k tasks", "tasksd copy process RSS, 3k tasks",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table has no row %q:\n%s", want, table)
		}
	}

	for _, want := range []string{"tail latency under an open loop at 50%", "submit (Wrap over sqlitestore)",
		"retrieve by id at 3k", "retrieve_batch by user at 3k", "callback delivery, finish to receipt"} {
		if !strings.Contains(table, want) {
			t.Errorf("the table has no %q:\n%s", want, table)
		}
	}
	latency, err := os.ReadFile(cfg.LatencySVG)
	if err != nil {
		t.Fatal(err)
	}
	checkLatencySVG(t, latency, 4)
	// -json-file writes the JSON report along with the table.
	written, err := os.ReadFile(cfg.JSONFile)
	if err != nil {
		t.Fatal(err)
	}
	checkJSONFields(t, written)

	// The datasets are kept: a second run reuses them, here as JSON.
	if _, err := os.Stat(sqlitePath(dir, 3000)); err != nil {
		t.Fatalf("dataset not kept: %v", err)
	}
	cfg.JSON, cfg.SVG, cfg.LatencySVG, cfg.JSONFile = true, "", "", ""
	out.Reset()
	if err := run(context.Background(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("JSON output: %v\n%s", err, out.Bytes())
	}
	checkJSONFields(t, out.Bytes())
	want := 22 // 16, 9b and 10b, the two console rows, the copy into SQLite and its RSS
	if cfg.PG != "" {
		want += 3 // 9pg, 10pg and the copy into PostgreSQL
	}
	if len(rep.Results) != want {
		t.Errorf("%d results, want %d", len(rep.Results), want)
		for _, r := range rep.Results {
			t.Log(r.Scenario)
		}
	}
	rows := map[string]bool{}
	for _, r := range rep.Results {
		rows[r.Row] = true
		if !(r.Ours > 0) || !(r.Reference > 0) || !(r.Ratio > 0) || r.Target == "" || r.RefName == "" {
			t.Errorf("result %+v has a missing or non-positive value", r)
		}
	}
	// Rows 9 and 10 compare with the store's own calls; the old references
	// stay as 9b and 10b (information, no target).
	for _, row := range []string{"9", "9b", "10", "10b"} {
		if !rows[row] {
			t.Errorf("no row %s", row)
		}
	}
	for _, r := range rep.Results {
		switch r.Row {
		case "9", "10":
			if !strings.Contains(r.RefName, "directly") && !strings.Contains(r.RefName, "ClaimDeliveries and RecordAttempt") {
				t.Errorf("row %s: reference %q, want the store called directly", r.Row, r.RefName)
			}
		case "9b", "10b":
			if !r.Info {
				t.Errorf("row %s is not marked information", r.Row)
			}
		}
	}
	if cfg.PG != "" && (!rows["9pg"] || !rows["10pg"]) {
		t.Error("no rows 9pg and 10pg with TASKS_PG_URL set")
	}
	if len(rep.Chart) != 2*2*len(cfg.Sizes) {
		t.Errorf("%d chart points, want %d", len(rep.Chart), 2*2*len(cfg.Sizes))
	}

	svg, err := os.ReadFile(filepath.Join(dir, "bench.svg"))
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	polylines := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("the chart is not well-formed XML: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 4 {
		t.Errorf("the chart has %d lines, want 4", polylines)
	}
}

// checkJSONFields checks that a JSON report carries rows 9, 9b, 10 and 10b
// and, for each of the four open-loop scenarios, the percentiles.
func checkJSONFields(t *testing.T, js []byte) {
	t.Helper()
	var raw struct {
		Results []map[string]any `json:"results"`
		Latency []map[string]any `json:"latency"`
	}
	if err := json.Unmarshal(js, &raw); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	rows := map[string]bool{}
	for _, r := range raw.Results {
		row, _ := r["row"].(string)
		rows[row] = true
	}
	for _, row := range []string{"9", "9b", "10", "10b"} {
		if !rows[row] {
			t.Errorf("JSON: no row %q", row)
		}
	}
	if len(raw.Latency) != 4 {
		t.Fatalf("JSON: %d latency entries, want 4", len(raw.Latency))
	}
	for _, l := range raw.Latency {
		for _, k := range []string{"p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "rate_per_second", "closed_loop_max_per_second"} {
			if v, ok := l[k].(float64); !ok || !(v > 0) {
				t.Errorf("JSON: latency %v: %s = %v, want a positive number", l["scenario"], k, l[k])
			}
		}
		if c, ok := l["curve"].([]any); !ok || len(c) < 2 {
			t.Errorf("JSON: latency %v: curve %v", l["scenario"], l["curve"])
		}
		if _, ok := l["pass"].(bool); !ok {
			t.Errorf("JSON: latency %v has no pass", l["scenario"])
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-short"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Rows != 50_000 || cfg.Duration != 600*time.Millisecond || len(cfg.Sizes) != 3 ||
		cfg.Load != 0.5 || cfg.TailDuration != 2*time.Second {
		t.Errorf("-short: %+v", cfg)
	}
	cfg, err = parseFlags([]string{"-short", "-rows", "5000"}, &bytes.Buffer{})
	if err != nil || cfg.Rows != 5000 {
		t.Errorf("-short -rows 5000: rows %d, %v", cfg.Rows, err)
	}
	cfg, err = parseFlags([]string{"-run", "^callback"}, &bytes.Buffer{})
	if err != nil || cfg.Run == nil || !cfg.Run.MatchString("callback submit") || cfg.Run.MatchString("HTTP") {
		t.Errorf("-run ^callback: %v, %v", cfg.Run, err)
	}
	cfg, err = parseFlags([]string{"-load", "0.1", "-tail-duration", "30s"}, &bytes.Buffer{})
	if err != nil || cfg.Load != 0.1 || cfg.TailDuration != 30*time.Second {
		t.Errorf("-load 0.1 -tail-duration 30s: %v, %v, %v", cfg.Load, cfg.TailDuration, err)
	}
	cfg, err = parseFlags([]string{"-skip", "^copy"}, &bytes.Buffer{})
	if err != nil || cfg.Skip == nil || !cfg.Skip.MatchString("copy RSS") || cfg.Skip.MatchString("tail submit") {
		t.Errorf("-skip ^copy: %v, %v", cfg.Skip, err)
	}
	for _, bad := range [][]string{{"-skip", "("}, {"-load", "0"}, {"-load", "1.5"}, {"-rows", "10"}, {"-concurrency", "0"}, {"extra"}, {"-run", "("}} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestTaskIDsUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := range 100_000 {
		id := taskID(i)
		if seen[id] || len(id) != 36 {
			t.Fatalf("task %d: id %q repeated or malformed", i, id)
		}
		seen[id] = true
	}
}

func TestPayloadSizes(t *testing.T) {
	task := genTask(7)
	if n := len(task.Request); n < 180 || n > 240 {
		t.Errorf("request of %d bytes, want about 200", n)
	}
	if n := len(task.Response); n < 540 || n > 680 {
		t.Errorf("response of %d bytes, want about 600", n)
	}
	if !json.Valid(task.Request) || !json.Valid(task.Response) {
		t.Error("request or response is not JSON")
	}
}

// Datasets are dated relative to the run: the newest task of the largest
// one about now, the whole within a week, so that tasksd's default
// retention (30 days) prunes none of it; a kept SQLite dataset holding
// tasks older than datasetMaxAge is built anew.
func TestDatasetDates(t *testing.T) {
	now := time.Now()
	for _, rows := range []int{1000, 1_000_000, 50_000_000} {
		b, s := dates(now, rows)
		last := b.Add(time.Duration(rows-1) * s)
		if now.Sub(last) > 2*time.Second || last.After(now) || now.Sub(b) > 7*24*time.Hour+time.Second {
			t.Errorf("rows %d: tasks from %v to %v (now %v)", rows, b, last, now)
		}
	}

	dir := t.TempDir()
	cfg := config{Dir: dir}
	ctx := context.Background()
	saved, savedStep := base, step
	t.Cleanup(func() { base, step = saved, savedStep })
	base, step = now.Add(-30*24*time.Hour), time.Millisecond // as a dataset kept for a month
	path, err := sqliteDataset(ctx, cfg, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if old, err := tooOld(ctx, path); err != nil || !old {
		t.Fatalf("a month-old dataset: tooOld = %v, %v", old, err)
	}
	base, step = dates(now, 1000)
	if path, err = sqliteDataset(ctx, cfg, 1000); err != nil {
		t.Fatal(err)
	}
	if old, err := tooOld(ctx, path); err != nil || old {
		t.Fatalf("the dataset was not rebuilt: tooOld = %v, %v", old, err)
	}
}
