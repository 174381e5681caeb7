package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/handler/console"
	"github.com/tasksapi/tasks/taskstore"
)

// get is an HTTP load getting the URLs (in turn) with the bench token; every
// answer must be 200.
func get(client *http.Client, urls []string, conc int) load {
	var n atomic.Uint64
	return load{conc: conc, op: func(ctx context.Context, _ int) error {
		url := urls[n.Add(1)%uint64(len(urls))]
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer bench-token")
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

// consoleHandler is the console over s, mounted at /console/ as tasksd
// mounts it, with the bench's operator token.
func consoleHandler(s taskstore.Store) http.Handler {
	auth := handler.Tokens(map[string]taskstore.Principal{"bench-token": {}})
	mux := http.NewServeMux()
	mux.Handle("/console/", console.New(s, auth, console.WithLogger(discard)))
	return mux
}

// consoleScenarios measures the console's list page over the large dataset
// against a retrieve_batch of the same filter and page size, both over
// loopback HTTP: the page an operator opens (every task, newest first) and
// the failed callbacks.
func (b *bench) consoleScenarios(ctx context.Context) ([]Result, error) {
	rows := b.cfg.Rows
	oursURL, apiURL, client, stop, err := servePair(consoleHandler(b.big), tasksHandler(b.big), b.cfg.Concurrency)
	if err != nil {
		return nil, err
	}
	defer stop()
	c := b.cfg.Concurrency
	var out []Result
	for _, s := range []struct {
		name, query, body string
		count             int
	}{
		{fmt.Sprintf("console list page at %s (limit 25, with count)", count(rows)), "limit=25",
			`{"action":"retrieve_batch","limit":25}`, rows},
		{fmt.Sprintf("console list of failed callbacks at %s (limit 25, with count)", count(rows)), "callback_status=failed&limit=25",
			`{"action":"retrieve_batch","callback_status":"failed","limit":25}`, failedCount(rows)},
	} {
		page := oursURL + "/console/api/tasks?" + s.query
		// Both answer the same tasks and count.
		req, _ := http.NewRequest(http.MethodGet, page, nil)
		req.Header.Set("Authorization", "Bearer bench-token")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(got), fmt.Sprintf(`],"count":%d,`, s.count)) ||
			strings.Count(string(got), `"id":`) != 25 {
			return nil, fmt.Errorf("console page %s answered %d: %.200s", s.query, resp.StatusCode, got)
		}
		if err := checkAnswer(client, apiURL, []byte(s.body), func(got []byte) error {
			if !strings.HasSuffix(string(got), fmt.Sprintf(`],"count":%d}`, s.count)) {
				return fmt.Errorf("retrieve_batch %s answered %.100s", s.body, got)
			}
			return nil
		}); err != nil {
			return nil, err
		}
		p, err := compare(ctx, b.cfg, get(client, []string{page}, c), post(client, apiURL, [][]byte{[]byte(s.body)}, c))
		if err != nil {
			return nil, err
		}
		out = append(out, timeRatio(s.name, "HTTP retrieve_batch of the same filter and limit", p, 1))
	}
	return out, nil
}
