package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the raw driver of the references

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// Result is one row of the table.
type Result struct {
	// Row is the row's label: its number in the table, with a suffix for
	// the rows that go with the one before ("9b", "9pg").
	Row      string `json:"row"`
	Scenario string `json:"scenario"`
	// Ours and Reference are in Unit: "ops/s" (more is better), "µs/op"
	// (less is better), "bytes/task" or "MiB".
	Ours      float64 `json:"ours"`
	Reference float64 `json:"reference"`
	Unit      string  `json:"unit"`
	// RefName says what the reference is.
	RefName string `json:"reference_name"`
	// Ratio is Ours/Reference for ops/s, bytes and MiB, and the time
	// ratio Ours/Reference for µs/op.
	Ratio  float64 `json:"ratio"`
	Target string  `json:"target"`
	Pass   bool    `json:"pass"`
	// Info marks a row shown for information, without a target.
	Info bool `json:"information_only,omitempty"`
	// Allocations per operation, process-wide (for the HTTP scenarios,
	// client and server together), when measured.
	OursAllocs float64 `json:"ours_allocs_per_op,omitempty"`
	RefAllocs  float64 `json:"reference_allocs_per_op,omitempty"`
	// The process's CPU time per operation (µs, all goroutines: for the
	// HTTP scenarios client and server), when measured.
	OursCPU float64 `json:"ours_cpu_us_per_op,omitempty"`
	RefCPU  float64 `json:"reference_cpu_us_per_op,omitempty"`
}

// Point is one measurement of the chart: the in-process latency of one
// Tasks API action (handler.ServeHTTP, serial) over a store holding Rows
// tasks.
type Point struct {
	Store  string  `json:"store"`  // "sqlite" or "memory"
	Action string  `json:"action"` // "retrieve" or "retrieve_batch"
	Rows   int     `json:"rows"`
	Micros float64 `json:"us_per_op"`
	Allocs float64 `json:"allocs_per_op"`
}

// Report is everything a run measured.
type Report struct {
	Machine struct {
		CPU        string `json:"cpu"`
		NumCPU     int    `json:"num_cpu"`
		GOMAXPROCS int    `json:"gomaxprocs"`
		GoVersion  string `json:"go_version"`
		OS         string `json:"os"`
	} `json:"machine"`
	Settings struct {
		Rows        int     `json:"rows"`
		SmallRows   int     `json:"small_rows"`
		Concurrency int     `json:"concurrency"`
		DurationSec float64 `json:"duration_seconds"`
		Rounds      int     `json:"rounds"`
		PayloadPer  float64 `json:"payload_bytes_per_task"`
		Load        float64 `json:"open_loop_load"`
		TailSec     float64 `json:"open_loop_seconds"`
	} `json:"settings"`
	Results []Result  `json:"results"`
	Chart   []Point   `json:"chart"`
	Latency []Latency `json:"latency"` // the open-loop scenarios

}

// throughput makes the row of a comparison of operations per second.
func throughput(name, ref string, p pair, atLeast float64) Result {
	r := Result{
		Scenario: name, RefName: ref, Unit: "ops/s",
		Ours: 1e9 / p.oursNs, Reference: 1e9 / p.refNs, Ratio: p.refNs / p.oursNs,
		Target: fmt.Sprintf("≥ %.1fx", atLeast), OursAllocs: p.oursAllocs, RefAllocs: p.refAllocs,
		OursCPU: p.oursCPU, RefCPU: p.refCPU,
	}
	r.Pass = r.Ratio >= atLeast
	return r
}

// timeRatio makes the row of a comparison of time per operation.
func timeRatio(name, ref string, p pair, atMost float64) Result {
	r := Result{
		Scenario: name, RefName: ref, Unit: "µs/op",
		Ours: p.oursNs / 1e3, Reference: p.refNs / 1e3, Ratio: p.oursNs / p.refNs,
		Target: fmt.Sprintf("≤ %.1fx", atMost), OursAllocs: p.oursAllocs, RefAllocs: p.refAllocs,
		OursCPU: p.oursCPU, RefCPU: p.refCPU,
	}
	r.Pass = r.Ratio <= atMost
	return r
}

var discard = slog.New(slog.DiscardHandler)

// bench holds what the scenarios share.
type bench struct {
	cfg     config
	scratch string
	paths   map[int]string // SQLite datasets by size
	big     *sqlitestore.Store
	small   *sqlitestore.Store
	rep     *Report
}

func measureAll(ctx context.Context, cfg config) (*Report, error) {
	rep := &Report{}
	rep.Machine.CPU = cpuModel()
	rep.Machine.NumCPU = runtime.NumCPU()
	rep.Machine.GOMAXPROCS = runtime.GOMAXPROCS(0)
	rep.Machine.GoVersion = runtime.Version()
	rep.Machine.OS = runtime.GOOS + "/" + runtime.GOARCH
	rep.Settings.Rows, rep.Settings.SmallRows = cfg.Rows, cfg.Small
	rep.Settings.Concurrency, rep.Settings.Rounds = cfg.Concurrency, cfg.Rounds
	rep.Settings.DurationSec = cfg.Duration.Seconds()
	rep.Settings.Load, rep.Settings.TailSec = cfg.Load, cfg.TailDuration.Seconds()
	rep.Settings.PayloadPer = avgPayload(cfg.Rows)

	scratch, err := os.MkdirTemp(cfg.Dir, "scratch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	b := &bench{cfg: cfg, scratch: scratch, paths: map[int]string{}, rep: rep}
	for _, n := range append([]int{cfg.Small, cfg.Rows}, cfg.Sizes...) {
		if b.paths[n] != "" {
			continue
		}
		if b.paths[n], err = sqliteDataset(ctx, cfg, n); err != nil {
			return nil, fmt.Errorf("building the SQLite dataset of %d tasks: %w", n, err)
		}
	}
	if b.big, err = sqlitestore.Open(b.paths[cfg.Rows]); err != nil {
		return nil, err
	}
	defer b.big.Close()
	if b.small, err = sqlitestore.Open(b.paths[cfg.Small]); err != nil {
		return nil, err
	}
	defer b.small.Close()

	steps := []struct {
		name string
		f    func(context.Context) ([]Result, error)
	}{
		{"sqlitestore create", b.sqliteCreate},
		{"sqlitestore get", b.sqliteGet},
		{"sqlitestore find", b.sqliteFind},
		{"memstore", b.memstoreScenarios},
		{"concurrent create", b.concurrentCreate},
		{"HTTP", b.httpScenarios},
		{"callback submit", b.submit},
		{"callback delivery", b.delivery},
		{"RSS", b.rss},
		{"disk", b.disk},
		{"chart", b.chart},
		{"console", b.consoleScenarios},
		{"copy into SQLite", b.copySQLiteStep},
		{"copy into PostgreSQL", b.copyPostgresStep},
		{"copy RSS", b.copyRSSStep},
		{"tail submit", b.tailSubmit},
		{"tail retrieve", b.tailRetrieve},
		{"tail retrieve_batch", b.tailBatch},
		{"tail delivery", b.tailDelivery},
	}
	var results []Result
	for _, s := range steps {
		if (cfg.Run != nil && !cfg.Run.MatchString(s.name)) || (cfg.Skip != nil && cfg.Skip.MatchString(s.name)) {
			continue
		}
		status(cfg, "measuring %s…", s.name)
		rs, err := s.f(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		results = append(results, rs...)
	}
	// Table order: the issue's.
	order := []string{
		"sqlitestore create", "sqlitestore get by id", "sqlitestore find by user",
		"memstore find by user", "sqlitestore concurrent create", "HTTP retrieve by id",
		"HTTP retrieve_batch by user", "HTTP retrieve_batch by application",
		"callback submit (Wrap)", "callback delivery", "memstore memory",
		"sqlitestore process RSS", "sqlitestore disk", "recorder alone",
		"HTTP retrieve_batch of failed callbacks", "console list",
		"tasksd copy SQLite → SQLite", "tasksd copy SQLite → PostgreSQL", "tasksd copy process RSS",
	}
	for _, prefix := range order {
		for _, r := range results {
			if strings.HasPrefix(r.Scenario, prefix) {
				rep.Results = append(rep.Results, r)
			}
		}
	}
	num := 0
	for i := range rep.Results {
		r := &rep.Results[i]
		if r.Row == "" {
			num++
			r.Row = strconv.Itoa(num)
		} else {
			r.Row = strconv.Itoa(num) + r.Row
		}
	}
	return rep, nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// Raw-driver references: the Store's own statements and connection
// settings, through database/sql and modernc.org/sqlite directly.
const (
	rawInsertSQL = `INSERT INTO tasks (id, trace_id, type, created_ms, started_ms, finished_ms,
		application_id, user_id, credential_id, callback_url, attempts, next_attempt_ms,
		delivered_ms, last_status, last_error, lease_ms, request, response)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	rawGetSQL = `SELECT id, trace_id, type, created_ms, started_ms, finished_ms, application_id, user_id,
		credential_id, callback_url, attempts, next_attempt_ms, delivered_ms, last_status, last_error,
		lease_ms, request, response FROM tasks WHERE id = ?`
	rawWriterDSN = `?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)` +
		`&_pragma=foreign_keys(1)&_pragma=temp_store(MEMORY)&_pragma=journal_size_limit(67108864)&_txlock=immediate`
	rawReaderDSN = `?_pragma=busy_timeout(10000)&_pragma=query_only(1)`
)

// emptyDB creates a new database with the schema in the scratch
// directory and returns its path.
func (b *bench) emptyDB(name string) (string, error) {
	path := filepath.Join(b.scratch, name)
	s, err := sqlitestore.Open(path)
	if err != nil {
		return "", err
	}
	return path, s.Close()
}

func (b *bench) sqliteCreate(ctx context.Context) ([]Result, error) {
	refPath, err := b.emptyDB("create-ref.db")
	if err != nil {
		return nil, err
	}
	s, err := sqlitestore.Open(filepath.Join(b.scratch, "create-ours.db"))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	db, err := sql.Open("sqlite", refPath+rawWriterDSN)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	st, err := db.PrepareContext(ctx, rawInsertSQL)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var nOurs, nRef atomic.Int64
	ours := load{conc: 1, op: func(ctx context.Context, _ int) error {
		return s.Create(ctx, newTask(int(nOurs.Add(1))))
	}}
	ref := load{conc: 1, op: func(ctx context.Context, _ int) error {
		t := newTask(int(nRef.Add(1)))
		_, err := st.ExecContext(ctx, t.ID, t.TraceID, t.Type, time.Now().UnixMilli(), 0, 0,
			t.ApplicationID, t.UserID, t.CredentialID, t.Callback.URL, 0, 0, 0, 0, "", 0, string(t.Request), nil)
		return err
	}}
	p, err := compare(ctx, b.cfg, ours, ref)
	if err != nil {
		return nil, err
	}
	return []Result{throughput("sqlitestore create", "the same INSERT through the raw driver, prepared", p, 0.7)}, nil
}

// ids returns ids of random tasks of a dataset of n.
func ids(n int) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]string, 4096)
	for i := range out {
		out[i] = taskID(rng.IntN(n))
	}
	return out
}

func (b *bench) sqliteGet(ctx context.Context) ([]Result, error) {
	db, err := sql.Open("sqlite", b.paths[b.cfg.Rows]+rawReaderDSN)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	st, err := db.PrepareContext(ctx, rawGetSQL)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	list := ids(b.cfg.Rows)
	var nOurs, nRef atomic.Int64
	ours := load{conc: 1, op: func(ctx context.Context, _ int) error {
		t, err := b.big.Get(ctx, list[nOurs.Add(1)%int64(len(list))])
		if err == nil && t.Response == nil {
			err = errors.New("get: no response")
		}
		return err
	}}
	ref := load{conc: 1, op: func(ctx context.Context, _ int) error {
		var (
			id, trace, typ, app, user, cred, url, lastErr      string
			created, started, finished, next, delivered, lease int64
			attempts, status                                   int
			req, resp                                          []byte
		)
		err := st.QueryRowContext(ctx, list[nRef.Add(1)%int64(len(list))]).Scan(&id, &trace, &typ, &created,
			&started, &finished, &app, &user, &cred, &url, &attempts, &next, &delivered, &status, &lastErr,
			&lease, &req, &resp)
		if err == nil && resp == nil {
			err = errors.New("raw get: no response")
		}
		return err
	}}
	p, err := compare(ctx, b.cfg, ours, ref)
	if err != nil {
		return nil, err
	}
	return []Result{throughput(fmt.Sprintf("sqlitestore get by id at %s", count(b.cfg.Rows)),
		"raw driver SELECT of the same columns, prepared", p, 0.8)}, nil
}

// findByUser is a serial load of Find(user, limit 12) over s holding rows
// tasks; it checks the total.
func findByUser(s taskstore.Store, rows int) load {
	var n atomic.Int64
	return load{conc: 1, op: func(ctx context.Context, _ int) error {
		u := int(n.Add(1)) % users
		page, total, err := s.Find(ctx, taskstore.Filter{UserID: userID(u), Limit: 12})
		want := rows / users
		if u < rows%users {
			want++
		}
		if err == nil && (total != want || len(page) != min(12, want)) {
			err = fmt.Errorf("find by user: %d tasks, total %d, want %d", len(page), total, want)
		}
		return err
	}}
}

func (b *bench) sqliteFind(ctx context.Context) ([]Result, error) {
	p, err := compare(ctx, b.cfg, findByUser(b.big, b.cfg.Rows), findByUser(b.small, b.cfg.Small))
	if err != nil {
		return nil, err
	}
	return []Result{timeRatio(fmt.Sprintf("sqlitestore find by user, limit 12: %s vs %s", count(b.cfg.Rows), count(b.cfg.Small)),
		fmt.Sprintf("itself at %s tasks", count(b.cfg.Small)), p, 1.5)}, nil
}

func (b *bench) concurrentCreate(ctx context.Context) ([]Result, error) {
	s, err := sqlitestore.Open(filepath.Join(b.scratch, "concurrent.db"))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var n atomic.Int64
	create := func(ctx context.Context, _ int) error { return s.Create(ctx, newTask(int(n.Add(1)))) }
	p, err := compare(ctx, b.cfg, load{op: create, conc: 64}, load{op: create, conc: 1})
	if err != nil {
		return nil, err
	}
	return []Result{throughput("sqlitestore concurrent create, 64 clients", "serial create", p, 1.8)}, nil
}

// count formats a dataset size: 1M, 100k, 2500.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// serve serves h on a loopback port until the returned stop is called.
func serve(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// servePair serves ours and the reference on loopback and returns their
// URLs, one client for both, and a function stopping everything.
func servePair(ours, ref http.Handler, conc int) (oursURL, refURL string, client *http.Client, stop func(), err error) {
	oursURL, stopOurs, err := serve(ours)
	if err != nil {
		return "", "", nil, nil, err
	}
	refURL, stopRef, err := serve(ref)
	if err != nil {
		stopOurs()
		return "", "", nil, nil, err
	}
	client = newClient(conc)
	return oursURL, refURL, client, func() {
		client.CloseIdleConnections()
		stopRef()
		stopOurs()
	}, nil
}

func newClient(conc int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: max(64, 2*conc), DisableCompression: true,
	}}
}

// post is an HTTP load posting bodies (in turn) to url with the bench
// token; every answer must be 200.
func post(client *http.Client, url string, bodies [][]byte, conc int) load {
	var n atomic.Uint64
	return load{conc: conc, op: func(ctx context.Context, _ int) error {
		body := bodies[n.Add(1)%uint64(len(bodies))]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer bench-token")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: status %d", url, resp.StatusCode)
		}
		return nil
	}}
}

// checkAnswer posts body once and checks the answer's size.
func checkAnswer(client *http.Client, url string, body []byte, check func([]byte) error) error {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer bench-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, got)
	}
	return check(got)
}

// tasksHandler is the Tasks API over s with one operator token.
func tasksHandler(s taskstore.Store) http.Handler {
	return handler.New(s, handler.Tokens(map[string]taskstore.Principal{"bench-token": {}}), handler.WithLogger(discard))
}

// bodies of the Tasks API requests the HTTP scenarios send.
func retrieveBodies(rows int) [][]byte {
	var out [][]byte
	for _, id := range ids(rows)[:1024] {
		out = append(out, fmt.Appendf(nil, `{"action":"retrieve","id":%q}`, id))
	}
	return out
}

func batchUserBodies() [][]byte {
	var out [][]byte
	for u := range users {
		out = append(out, fmt.Appendf(nil, `{"action":"retrieve_batch","user_id":%q,"limit":12}`, userID(u)))
	}
	return out
}

func batchAppBodies() [][]byte {
	return [][]byte{fmt.Appendf(nil, `{"action":"retrieve_batch","application_id":%q,"limit":12}`, appID)}
}

// failedBodies list the failed callbacks (one task in failedEvery) of the
// whole dataset, count included, as an operator would.
func failedBodies() [][]byte {
	return [][]byte{[]byte(`{"action":"retrieve_batch","callback_status":"failed","limit":12}`)}
}

// failedCount is how many of the first rows tasks have a failed callback.
func failedCount(rows int) int {
	n := rows / failedEvery
	if rows%failedEvery > failedAt {
		n++
	}
	return n
}

func (b *bench) httpScenarios(ctx context.Context) ([]Result, error) {
	rows := b.cfg.Rows
	record := genTask(0).AppendJSON(nil)
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		w.Write(record)
	})
	oursURL, bareURL, client, stop, err := servePair(tasksHandler(b.big), bare, b.cfg.Concurrency)
	if err != nil {
		return nil, err
	}
	defer stop()

	retrieve, byUser, byApp, failed := retrieveBodies(rows), batchUserBodies(), batchAppBodies(), failedBodies()
	// The answers are what the scenarios claim to measure.
	if err := checkAnswer(client, oursURL, retrieve[0], func(got []byte) error {
		if n := len(got); n < len(record)-100 || n > len(record)+100 {
			return fmt.Errorf("retrieve answered %d bytes, want about %d: %.200s", n, len(record), got)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, body := range [][]byte{byUser[0], byApp[0], failed[0]} {
		if err := checkAnswer(client, oursURL, body, func(got []byte) error {
			want := rows
			switch {
			case bytes.Contains(body, []byte("user_id")):
				want = (rows + users - 1) / users
			case bytes.Contains(body, []byte("callback_status")):
				want = failedCount(rows)
			}
			if !bytes.HasSuffix(got, fmt.Appendf(nil, `],"count":%d}`, want)) || len(got) < 12*(len(record)-100) {
				return fmt.Errorf("%s answered %d bytes: %.100s … %s", body, len(got), got, got[max(0, len(got)-40):])
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}

	c := b.cfg.Concurrency
	var out []Result
	p, err := compare(ctx, b.cfg, post(client, oursURL, retrieve, c), post(client, bareURL, retrieve, c))
	if err != nil {
		return nil, err
	}
	out = append(out, throughput(fmt.Sprintf("HTTP retrieve by id at %s", count(rows)),
		"bare handler writing a pre-encoded record of the same size", p, 0.6))
	p, err = compare(ctx, b.cfg, post(client, oursURL, byUser, c), post(client, oursURL, retrieve, c))
	if err != nil {
		return nil, err
	}
	out = append(out, timeRatio(fmt.Sprintf("HTTP retrieve_batch by user at %s (limit 12)", count(rows)),
		"HTTP retrieve by id", p, 3))
	p, err = compare(ctx, b.cfg, post(client, oursURL, byApp, c), post(client, oursURL, retrieve, c))
	if err != nil {
		return nil, err
	}
	out = append(out, timeRatio(fmt.Sprintf("HTTP retrieve_batch by application holding all %s, with count", count(rows)),
		"HTTP retrieve by id", p, 3))
	p, err = compare(ctx, b.cfg, post(client, oursURL, failed, c), post(client, oursURL, retrieve, c))
	if err != nil {
		return nil, err
	}
	out = append(out, timeRatio(fmt.Sprintf("HTTP retrieve_batch of failed callbacks (1%% of %s), with count", count(rows)),
		"HTTP retrieve by id", p, 3))
	return out, nil
}

func (b *bench) disk(ctx context.Context) ([]Result, error) {
	path := b.paths[b.cfg.Rows]
	var size int64
	for _, suffix := range []string{"", "-wal"} {
		if fi, err := os.Stat(path + suffix); err == nil {
			size += fi.Size()
		}
	}
	per, pay := float64(size)/float64(b.cfg.Rows), b.rep.Settings.PayloadPer
	return []Result{{
		Scenario: fmt.Sprintf("sqlitestore disk: file bytes per task at %s", count(b.cfg.Rows)),
		RefName:  "payload bytes per task", Unit: "bytes/task",
		Ours: per, Reference: pay, Ratio: per / pay, Target: "≤ 2.0x", Pass: per/pay <= 2,
	}}, nil
}

func (b *bench) memstoreScenarios(ctx context.Context) ([]Result, error) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	big, err := memDataset(ctx, b.cfg, b.cfg.Rows)
	if err != nil {
		return nil, err
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	defer big.Close()
	small, err := memDataset(ctx, b.cfg, b.cfg.Small)
	if err != nil {
		return nil, err
	}
	defer small.Close()

	p, err := compare(ctx, b.cfg, findByUser(big, b.cfg.Rows), findByUser(small, b.cfg.Small))
	if err != nil {
		return nil, err
	}
	out := []Result{timeRatio(fmt.Sprintf("memstore find by user, limit 12: %s vs %s", count(b.cfg.Rows), count(b.cfg.Small)),
		fmt.Sprintf("itself at %s tasks", count(b.cfg.Small)), p, 2)}

	per := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(b.cfg.Rows)
	pay := b.rep.Settings.PayloadPer
	out = append(out, Result{
		Scenario: fmt.Sprintf("memstore memory: heap bytes per task at %s", count(b.cfg.Rows)),
		RefName:  "payload bytes per task", Unit: "bytes/task",
		Ours: per, Reference: pay, Ratio: per / pay, Target: "≤ 2.0x", Pass: per/pay <= 2,
	})

	// The chart's memstore points.
	for _, n := range b.cfg.Sizes {
		var s *memstore.Store
		switch n {
		case b.cfg.Rows:
			s = big
		case b.cfg.Small:
			s = small
		default:
			if s, err = memDataset(ctx, b.cfg, n); err != nil {
				return nil, err
			}
		}
		err := b.chartPoints(ctx, "memory", s, n)
		if s != big && s != small {
			s.Close()
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// chart measures the sqlite points of the chart (the memory ones are
// measured with the memstore scenarios).
func (b *bench) chart(ctx context.Context) ([]Result, error) {
	for _, n := range b.cfg.Sizes {
		s, err := sqlitestore.Open(b.paths[n])
		if err != nil {
			return nil, err
		}
		err = b.chartPoints(ctx, "sqlite", s, n)
		s.Close()
		if err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// serveLoad is a serial load calling h.ServeHTTP directly with a reused
// request and writer: the handler's and the store's cost alone.
func serveLoad(h http.Handler, bodies [][]byte) load {
	body := bytes.NewReader(nil)
	r, _ := http.NewRequest(http.MethodPost, "/tasks", io.NopCloser(body))
	r.Header.Set("Authorization", "Bearer bench-token")
	r.Header.Set("Content-Type", "application/json")
	w := &discardWriter{h: http.Header{}}
	i := 0
	return load{conc: 1, op: func(context.Context, int) error {
		body.Reset(bodies[i%len(bodies)])
		i++
		r.ContentLength = int64(body.Len())
		w.code = 0
		h.ServeHTTP(w, r)
		if w.code != http.StatusOK {
			return fmt.Errorf("status %d", w.code)
		}
		return nil
	}}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header  { return w.h }
func (w *discardWriter) WriteHeader(code int) { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(p), nil
}

func (b *bench) chartPoints(ctx context.Context, store string, s taskstore.Store, rows int) error {
	h := tasksHandler(s)
	cfg := b.cfg
	cfg.Duration = max(cfg.Duration/3, time.Millisecond)
	p, err := compare(ctx, cfg, serveLoad(h, retrieveBodies(rows)), serveLoad(h, batchUserBodies()))
	if err != nil {
		return err
	}
	b.rep.Chart = append(b.rep.Chart,
		Point{Store: store, Action: "retrieve", Rows: rows, Micros: p.oursNs / 1e3, Allocs: p.oursAllocs},
		Point{Store: store, Action: "retrieve_batch", Rows: rows, Micros: p.refNs / 1e3, Allocs: p.refAllocs})
	return nil
}
