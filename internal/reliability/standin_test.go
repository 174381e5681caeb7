package reliability

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// TestStandinFiles: the stand-in's /files/ names cannot be derived from the
// prompt (two processes name the same prompt's image differently), and a
// Range header with many ranges is answered with the file, not with a
// multipart answer many times its size.
func TestStandinFiles(t *testing.T) {
	var urls []string
	for range 2 {
		d := tasksdtest.Start(t, nil, "-db", ":memory:", "-tokens", writeTokens(t), "-standin-delay", "0s")
		a := mustPost(t, d.URL()+genPath, tokenA, map[string]any{"prompt": "a guessable prompt", "size": "256x256"})
		var ans struct {
			Data []struct {
				URL string `json:"url"`
			} `json:"data"`
		}
		if err := json.Unmarshal(a.raw, &ans); err != nil || a.status != 200 || len(ans.Data) != 1 {
			t.Fatalf("generate: %d %s", a.status, a.raw)
		}
		urls = append(urls, ans.Data[0].URL)
	}
	name := func(u string) string { return u[strings.LastIndexByte(u, '/')+1:] }
	if name(urls[0]) == name(urls[1]) {
		t.Errorf("two processes name the image of one prompt %s: the name derives from the prompt", name(urls[0]))
	}

	u := urls[1]
	get := func(rng string) (int, int) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, _ := io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, int(n)
	}
	_, size := get("")
	rng := "bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", 7000), ",") // 28 KB of header
	status, n := get(rng)
	if status != http.StatusOK || n != size {
		t.Errorf("7000 ranges: %d, %d bytes; want 200 and the file (%d bytes)", status, n, size)
	}
	if status, n := get("bytes=0-99"); status != http.StatusPartialContent || n != 100 {
		t.Errorf("one range: %d, %d bytes", status, n)
	}
	t.Logf("stand-in files: names %s and %s for one prompt in two processes; a %d-byte Range header of 7000 ranges answered %d with %d bytes (file %d bytes)",
		name(urls[0]), name(urls[1]), len(rng), status, n, size)
}
