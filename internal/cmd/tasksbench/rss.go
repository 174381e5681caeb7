package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/tasksapi/tasks/sqlitestore"
)

// The RSS scenario runs in a child process (this executable again, with
// childEnv set), so that nothing the parent holds (the memstore datasets,
// other scenarios' garbage) is counted.
const (
	childEnv    = "TASKSBENCH_CHILD"
	childDB     = "TASKSBENCH_DB"
	childRows   = "TASKSBENCH_ROWS"
	childConc   = "TASKSBENCH_CONCURRENCY"
	childDurEnv = "TASKSBENCH_DURATION"
)

// rssReport is what the child prints.
type rssReport struct {
	RSSKiB   int64 `json:"vmrss_kib"`
	HWMKiB   int64 `json:"vmhwm_kib"`
	Requests int64 `json:"requests"`
}

func (b *bench) rss(ctx context.Context) ([]Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"=rss", childDB+"="+b.paths[b.cfg.Rows],
		childRows+"="+strconv.Itoa(b.cfg.Rows), childConc+"="+strconv.Itoa(b.cfg.Concurrency),
		childDurEnv+"="+b.cfg.Duration.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("child process: %w: %s", err, stderr.Bytes())
	}
	var r rssReport
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("child process answered %q: %w", out, err)
	}
	mib := float64(r.HWMKiB) / 1024
	return []Result{{
		Scenario: fmt.Sprintf("sqlitestore process RSS serving %s tasks (peak, after %d HTTP requests)", count(b.cfg.Rows), r.Requests),
		RefName:  "limit", Unit: "MiB", Ours: mib, Reference: 256, Ratio: mib / 256, Target: "≤ 256 MiB", Pass: mib <= 256,
	}}, nil
}

// childMain is the RSS child: it opens the SQLite dataset, serves the Tasks
// API on loopback, sends it a mix of retrieve and retrieve_batch (by user,
// by application) for the given duration, and prints its peak and current
// resident set size as JSON.
func childMain(stdout io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "tasksbench child:", err)
		return 1
	}
	rows, err1 := strconv.Atoi(os.Getenv(childRows))
	conc, err2 := strconv.Atoi(os.Getenv(childConc))
	dur, err3 := time.ParseDuration(os.Getenv(childDurEnv))
	if err1 != nil || err2 != nil || err3 != nil {
		return fail(fmt.Errorf("bad environment"))
	}
	s, err := sqlitestore.Open(os.Getenv(childDB))
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	url, stop, err := serve(tasksHandler(s))
	if err != nil {
		return fail(err)
	}
	defer stop()
	client := newClient(conc)
	defer client.CloseIdleConnections()
	var bodies [][]byte
	bodies = append(bodies, retrieveBodies(rows)...)
	bodies = append(bodies, batchUserBodies()...)
	for range 10 {
		bodies = append(bodies, batchAppBodies()...)
	}
	smp, err := runFor(context.Background(), post(client, url, bodies, conc), max(dur, time.Second))
	if err != nil {
		return fail(err)
	}
	rss, hwm, err := readRSS()
	if err != nil {
		return fail(err)
	}
	json.NewEncoder(stdout).Encode(rssReport{RSSKiB: rss, HWMKiB: hwm, Requests: smp.ops})
	return 0
}

// readRSS reads VmRSS and VmHWM (peak RSS) from /proc/self/status, in KiB.
func readRSS() (rss, hwm int64, err error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0, fmt.Errorf("reading the resident set size needs Linux's /proc: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm, sc.Err()
}
