package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// datasetVersion changes whenever genTask changes, so that kept datasets of
// the old shape are rebuilt.
const datasetVersion = 4

// One task in failedEvery (task i with i%failedEvery == failedAt) has a
// failed callback (given up after seven attempts answered 500); the others
// were delivered at once.
const failedEvery, failedAt = 100, 37

// users is how many users share a dataset: each holds rows/users tasks (100
// at 10,000 tasks, 10,000 at 1,000,000). All tasks belong to one
// application.
const users = 100

const (
	appID       = "app-main"
	callbackURL = "https://client.example.com/hooks/images/v1"
)

// Task i is created at base + i×step: the tasks of the largest dataset
// (-rows) end when the run starts and span at most a week, so that tasksd
// -db on a dataset, with its default retention of 30 days, prunes none of
// it. A kept SQLite dataset ages: it is rebuilt once its oldest task is
// older than datasetMaxAge, which leaves the default retention nine days.
var base, step = dates(time.Now(), 1_000_000)

const datasetMaxAge = 21 * 24 * time.Hour

// dates returns base and step for a run at now whose largest dataset holds
// rows tasks: a second apart (1009 ms, not a round number), or closer when
// that would span more than a week.
func dates(now time.Time, rows int) (time.Time, time.Duration) {
	step := min(1009*time.Millisecond, 7*24*time.Hour/time.Duration(max(rows, 1)))
	return now.Add(-time.Duration(rows) * step).Truncate(time.Second), step
}

var types = [...]string{"images_generations", "images_edits", "images_variations"}

// mix is splitmix64: a bijection of uint64, so different i give different ids.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// taskID is the UUIDv4-shaped id of task i: random-looking, so that inserts
// land all over the id index (the worst case; callback mode makes version 7
// UUIDs, which sort in creation order).
func taskID(i int) string {
	hi, lo := mix(uint64(i)), mix(uint64(i)^0x5bd1e995)
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", hi>>32, (hi>>16)&0xffff, hi&0xfff,
		0x8000|(lo>>48)&0x3fff, lo&0xffffffffffff)
}

func userID(i int) string { return fmt.Sprintf("user-%03d", i%users) }

// prompts vary the request text.
var prompts = [...]string{
	"A watercolor painting of a cat sitting on a windowsill at dusk, soft light",
	"An isometric illustration of a tiny city on a floating island, pastel colors",
	"A product photo of a ceramic coffee mug on a wooden table, morning sunlight",
	"A detailed pencil sketch of an old lighthouse on a cliff during a storm",
}

// genTask is task i of a dataset: finished, with a request of about 200
// bytes and a response of about 600, as an image API call in callback mode
// makes them, its callback delivered (one in failedEvery failed). One task
// in two has a trace id.
func genTask(i int) taskstore.Task {
	id := taskID(i)
	created := base.Add(time.Duration(i) * step)
	trace := ""
	if i%2 == 0 {
		trace = fmt.Sprintf("trace-%010d", i)
	}
	req := fmt.Sprintf(`{"model":"gpt-image-1","prompt":%q,"size":"1024x1024","quality":"high","n":1,"callback_url":%q}`,
		prompts[i%len(prompts)], callbackURL)
	traceField := ""
	if trace != "" {
		traceField = fmt.Sprintf(`"trace_id":%q,`, trace)
	}
	resp := fmt.Sprintf(`{"success":true,"task_id":%q,%s"created":%d,"data":[{"url":"https://cdn.example.com/images/2025/01/%s.png","revised_prompt":%q}],"usage":{"input_tokens":%d,"output_tokens":4160,"total_tokens":%d,"input_tokens_details":{"text_tokens":%d,"image_tokens":0}},"size":"1024x1024","quality":"high","output_format":"png","background":"opaque"}`,
		id, traceField, created.Unix()+30, id,
		prompts[i%len(prompts)]+", rendered with fine detail, balanced composition, natural colors and gentle contrast, in a square frame",
		40+i%50, 4200+i%50, 40+i%50)
	t := taskstore.Task{
		ID: id, TraceID: trace, Type: types[i%len(types)],
		Request: json.RawMessage(req), Response: json.RawMessage(resp),
		CreatedAt: created, StartedAt: created.Add(4 * time.Millisecond), FinishedAt: created.Add(29437 * time.Millisecond),
		ApplicationID: appID, UserID: userID(i), CredentialID: fmt.Sprintf("cred-%03d", i%users),
		Callback: taskstore.Callback{
			URL: callbackURL, Attempts: 1, DeliveredAt: created.Add(29500 * time.Millisecond), LastStatus: 200,
		},
	}
	if i%failedEvery == failedAt {
		t.Callback = taskstore.Callback{URL: callbackURL, Attempts: 7, LastStatus: 500, LastError: "status 500"}
	}
	return t
}

// newTask is task i as callback mode creates it: not started, no response.
func newTask(i int) taskstore.Task {
	t := genTask(i)
	t.Response, t.StartedAt, t.FinishedAt = nil, time.Time{}, time.Time{}
	t.Callback = taskstore.Callback{URL: callbackURL}
	t.CreatedAt = time.Time{}
	return t
}

// payload is the size of what a task carries: the bytes of its string and
// JSON fields (id, trace id, type, request, response, application, user,
// credential, callback URL, last delivery error). Times and counters are
// not counted.
func payload(t taskstore.Task) int {
	return len(t.ID) + len(t.TraceID) + len(t.Type) + len(t.Request) + len(t.Response) +
		len(t.ApplicationID) + len(t.UserID) + len(t.CredentialID) + len(t.Callback.URL) + len(t.Callback.LastError)
}

// avgPayload is the mean payload of the first n tasks (sampled).
func avgPayload(n int) float64 {
	step := max(1, n/10_000)
	total, count := 0, 0
	for i := 0; i < n; i += step {
		total += payload(genTask(i))
		count++
	}
	return float64(total) / float64(count)
}

// sqlitePath is where the SQLite dataset of n tasks is kept.
func sqlitePath(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("sqlite-s%d-d%d-%d.db", sqlitestore.SchemaVersion(), datasetVersion, n))
}

// importChunk is how many tasks one Import transaction holds.
const importChunk = 10_000

// sqliteDataset returns the path of a SQLite database holding tasks
// 0…n-1, building it (with Store.Import, in chunks) when it is not kept in
// dir yet, or the one kept has tasks older than datasetMaxAge.
func sqliteDataset(ctx context.Context, cfg config, n int) (string, error) {
	path := sqlitePath(cfg.Dir, n)
	if _, err := os.Stat(path); err == nil {
		stale, err := tooOld(ctx, path)
		if err != nil || !stale {
			return path, err
		}
		status(cfg, "sqlite dataset %d: tasks older than %v, rebuilding it", n, datasetMaxAge)
		for _, suffix := range []string{"", "-wal", "-shm"} {
			os.Remove(path + suffix)
		}
	}
	tmp := path + ".building"
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(tmp + suffix)
	}
	s, err := sqlitestore.Open(tmp)
	if err != nil {
		return "", err
	}
	bar := newBar(cfg.Progress, fmt.Sprintf("sqlite dataset %d", n), n)
	chunk := make([]taskstore.Task, 0, importChunk)
	for lo := 0; lo < n; lo += importChunk {
		chunk = chunk[:0]
		for i := lo; i < min(lo+importChunk, n); i++ {
			chunk = append(chunk, genTask(i))
		}
		if err := s.Import(ctx, chunk); err != nil {
			s.Close()
			return "", err
		}
		bar.set(lo + len(chunk))
	}
	bar.done()
	if err := s.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(tmp + suffix)
	}
	return path, nil
}

// tooOld reports whether the dataset at path holds a task created more than
// datasetMaxAge ago.
func tooOld(ctx context.Context, path string) (bool, error) {
	s, err := sqlitestore.Open(path)
	if err != nil {
		return false, err
	}
	defer s.Close()
	_, n, err := s.Find(ctx, taskstore.Filter{CreatedMax: time.Now().Add(-datasetMaxAge)})
	return n > 0, err
}

// memDataset builds a memstore holding tasks 0…n-1.
func memDataset(ctx context.Context, cfg config, n int) (*memstore.Store, error) {
	s := memstore.New()
	bar := newBar(cfg.Progress, fmt.Sprintf("memstore dataset %d", n), n)
	for i := range n {
		if err := s.Create(ctx, genTask(i)); err != nil {
			s.Close()
			return nil, err
		}
		if i%4096 == 0 {
			bar.set(i)
		}
	}
	bar.done()
	return s, nil
}

// bar is a progress bar on a terminal line.
type bar struct {
	w     io.Writer
	label string
	total int
	start time.Time
	last  time.Time
}

func newBar(w io.Writer, label string, total int) *bar {
	b := &bar{w: w, label: label, total: total, start: time.Now()}
	b.set(0)
	return b
}

func (b *bar) set(done int) {
	if b.w == nil || (time.Since(b.last) < 100*time.Millisecond && done < b.total) {
		return
	}
	b.last = time.Now()
	const width = 30
	frac := float64(done) / float64(max(b.total, 1))
	fill := int(frac * width)
	fmt.Fprintf(b.w, "\r%-26s [%s%s] %3.0f%% %6.1fs", b.label, strings.Repeat("#", fill),
		strings.Repeat(".", width-fill), 100*frac, time.Since(b.start).Seconds())
}

func (b *bar) done() {
	if b.w == nil {
		return
	}
	b.set(b.total)
	fmt.Fprintln(b.w)
}

// status prints a one-line note on the progress writer.
func status(cfg config, format string, args ...any) {
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, format+"\n", args...)
	}
}
