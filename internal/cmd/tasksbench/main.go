// Command tasksbench measures the task stores, the Tasks API handler and
// callback mode against the reference each performance target of the
// project names, in one process, and prints a table: scenario, ours,
// reference, ratio, target, pass.
//
//	go run ./internal/cmd/tasksbench                 # 1,000,000-task datasets
//	go run ./internal/cmd/tasksbench -short          # small datasets, under a minute
//	go run ./internal/cmd/tasksbench -json -svg docs/bench.svg
//	go run ./internal/cmd/tasksbench -svg docs/bench.svg -latency-svg docs/latency.svg -json-file docs/bench.json
//
// Ours and the reference of a scenario are measured interleaved in the same
// process: several short rounds alternate between them (ours first in even
// rounds, the reference first in odd ones) and the medians of the rounds
// are compared, so a machine loaded by something else slows both alike.
//
// After the comparisons, four scenarios (submit, retrieve, retrieve_batch,
// callback delivery) run as open loops: requests sent at a constant rate,
// -load times the closed-loop maximum measured just before, each latency
// measured from the request's intended send time into an HDR histogram;
// the table prints their percentiles, -latency-svg draws them.
//
// Datasets are built once and kept in -dir between runs (SQLite files,
// named by schema and dataset version and size); the in-memory ones are
// built in every run. A progress bar on stderr shows the builds.
//
// The exit status is non-zero only when the benchmark itself fails; a missed
// target is printed (pass "NO"), not an error.
//
// See BENCHMARKS.md at the module root for the scenarios, their references,
// what "payload" means and the results on the reference machine.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"time"
)

func main() {
	// The stores log their schema migrations at Info level (slog.Default
	// when given no logger); each scenario opens fresh files, so keep only
	// warnings and errors off the report's way.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if os.Getenv(childEnv) != "" {
		os.Exit(child(os.Stdout))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tasksbench:", err)
		os.Exit(1)
	}
}

// config is what the flags set.
type config struct {
	Rows         int            // tasks in the large datasets
	Small        int            // tasks in the small datasets ("10k")
	Short        bool           // small datasets and short measurements
	Concurrency  int            // clients of the HTTP, submit and delivery scenarios
	Duration     time.Duration  // time each side of a comparison runs, over all rounds
	Rounds       int            // rounds each comparison is split into
	JSON         bool           // print JSON instead of the table
	SVG          string         // write the latency chart here
	Dir          string         // datasets and scratch files
	Progress     io.Writer      // progress bars; nil: none
	Sizes        []int          // dataset sizes of the chart
	Run          *regexp.Regexp // measure only the steps whose names match; nil: all
	Skip         *regexp.Regexp // skip the steps whose names match; nil: none
	CPUProfile   string         // write a CPU profile of the whole run here
	PG           string         // PostgreSQL for the copy into PostgreSQL; "": not measured
	Load         float64        // open-loop arrival rate, as a fraction of the closed-loop maximum
	TailDuration time.Duration  // length of each open loop
	LatencySVG   string         // write the latency-distribution chart here
	JSONFile     string         // also write the JSON report here
	Profiles     string         // write a CPU profile of each open loop into this directory

	deliveryBatch int // tasks per delivery round
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("tasksbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tasksbench [flags]\n\nRuns every performance scenario and prints ours, the reference, the ratio and the target.\n\n")
		fs.PrintDefaults()
	}
	rows := fs.Int("rows", 1_000_000, "tasks in the large datasets")
	short := fs.Bool("short", false, "small datasets (50,000 tasks) and short measurements: the whole run takes under a minute")
	conc := fs.Int("concurrency", 16, "concurrent clients of the HTTP, submit and delivery scenarios")
	dur := fs.Duration("duration", 0, "time each side of a comparison runs, over all its rounds (default 3s, 600ms with -short)")
	rounds := fs.Int("rounds", 6, "rounds each comparison alternates between ours and the reference")
	js := fs.Bool("json", false, "print the results as JSON")
	svg := fs.String("svg", "", "write an SVG chart of retrieve and retrieve_batch latency against stored tasks to this file")
	runPat := fs.String("run", "", "measure only the steps whose names match this regular expression "+
		"(sqlitestore create, sqlitestore get, sqlitestore find, memstore, concurrent create, HTTP, "+
		"callback submit, callback delivery, RSS, disk, chart, console, copy into SQLite, copy into PostgreSQL, copy RSS, "+
		"tail submit, tail retrieve, tail retrieve_batch, tail delivery)")
	skipPat := fs.String("skip", "", "skip the steps whose names match this regular expression (e.g. '^copy': the copies of 1,000,000 tasks take about 15 minutes)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (both sides of every comparison) to this file")
	pg := fs.String("pg", os.Getenv("TASKS_PG_URL"), "PostgreSQL URL for the copy into PostgreSQL (a schema is created and dropped per round); default $TASKS_PG_URL, none: that row is skipped")
	loadFrac := fs.Float64("load", 0.5, "open-loop arrival rate of the tail-latency scenarios, as a fraction of their closed-loop maximum measured in the same run")
	tailDur := fs.Duration("tail-duration", 0, "length of each tail-latency open loop (default 20s, 2s with -short)")
	latSVG := fs.String("latency-svg", "", "write an SVG chart of the tail-latency distributions (latency against percentile) to this file")
	jsonFile := fs.String("json-file", "", "also write the results as JSON to this file")
	profiles := fs.String("profiles", "", "write a CPU profile of each tail-latency open loop into this directory")
	dir := fs.String("dir", filepath.Join(os.TempDir(), "tasksbench-datasets"), "directory keeping the datasets between runs")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tasksbench: unexpected arguments %q\n", fs.Args())
		return config{}, fmt.Errorf("unexpected arguments")
	}
	cfg := config{
		Rows: *rows, Short: *short, Concurrency: *conc, Duration: *dur, Rounds: *rounds,
		JSON: *js, SVG: *svg, Dir: *dir, Progress: stderr, CPUProfile: *cpuProfile, PG: *pg,
		Load: *loadFrac, TailDuration: *tailDur, LatencySVG: *latSVG, JSONFile: *jsonFile, Profiles: *profiles,
	}
	if *runPat != "" {
		re, err := regexp.Compile(*runPat)
		if err != nil {
			fmt.Fprintln(stderr, "tasksbench: -run:", err)
			return config{}, err
		}
		cfg.Run = re
	}
	if *skipPat != "" {
		re, err := regexp.Compile(*skipPat)
		if err != nil {
			fmt.Fprintln(stderr, "tasksbench: -skip:", err)
			return config{}, err
		}
		cfg.Skip = re
	}
	rowsSet := false
	fs.Visit(func(f *flag.Flag) { rowsSet = rowsSet || f.Name == "rows" })
	if cfg.Short && !rowsSet {
		cfg.Rows = 50_000
	}
	if cfg.Duration == 0 {
		cfg.Duration = 3 * time.Second
		if cfg.Short {
			cfg.Duration = 600 * time.Millisecond
		}
	}
	if cfg.TailDuration == 0 {
		cfg.TailDuration = 20 * time.Second
		if cfg.Short {
			cfg.TailDuration = 2 * time.Second
		}
	}
	if err := cfg.finish(); err != nil {
		fmt.Fprintln(stderr, "tasksbench:", err)
		return config{}, err
	}
	return cfg, nil
}

// finish checks cfg and derives the sizes.
func (c *config) finish() error {
	switch {
	case c.Rows < 1000:
		return fmt.Errorf("-rows must be at least 1000")
	case c.Concurrency < 1:
		return fmt.Errorf("-concurrency must be at least 1")
	case c.Rounds < 1:
		return fmt.Errorf("-rounds must be at least 1")
	case c.Duration < time.Millisecond:
		return fmt.Errorf("-duration must be at least 1ms")
	case !(c.Load > 0 && c.Load <= 1):
		return fmt.Errorf("-load must be above 0 and at most 1")
	case c.TailDuration < 10*time.Millisecond:
		return fmt.Errorf("-tail-duration must be at least 10ms")
	}
	if c.Small == 0 {
		// 1M vs 10k: the small dataset is a hundredth of the large one,
		// but holds at least a page (12) for each user.
		c.Small = min(max(c.Rows/100, 12*users), c.Rows)
	}
	if c.Sizes == nil {
		c.Sizes = []int{c.Small, max(c.Rows/10, c.Small), c.Rows}
	}
	if c.deliveryBatch == 0 {
		c.deliveryBatch = 2000
		if c.Short {
			c.deliveryBatch = 400
		}
	}
	return nil
}

// run measures everything and writes the report to out.
func run(ctx context.Context, cfg config, out io.Writer) error {
	base, step = dates(time.Now(), cfg.Rows)
	raiseFileLimit()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := measureAll(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.SVG != "" {
		if err := os.WriteFile(cfg.SVG, chartSVG(rep.Chart), 0o644); err != nil {
			return fmt.Errorf("writing the chart: %w", err)
		}
	}
	if cfg.LatencySVG != "" {
		if err := os.WriteFile(cfg.LatencySVG, latencySVG(rep.Latency), 0o644); err != nil {
			return fmt.Errorf("writing the latency chart: %w", err)
		}
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	js = append(js, '\n')
	if cfg.JSONFile != "" {
		if err := os.WriteFile(cfg.JSONFile, js, 0o644); err != nil {
			return fmt.Errorf("writing the JSON report: %w", err)
		}
	}
	if cfg.JSON {
		_, err := out.Write(js)
		return err
	}
	return writeTable(out, rep)
}
