package tasksdtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/tasksdtest"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

var tokenRE = regexp.MustCompile(`Bearer (tsk_[0-9a-f]+)`)

func TestMain(m *testing.M) { tasksdtest.Main(m) }

// Start runs tasksd for one test. Stop ends it with SIGTERM and fails the
// test unless it exits cleanly; Kill ends it with SIGKILL. The example is
// compiled, not run: it needs a test and builds the binary.
func ExampleStart() {
	_ = func(t *testing.T) {
		rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Secret: secret})
		d := tasksdtest.Start(t, []string{"TASKSD_CALLBACK_SECRET=" + secret},
			"-db", filepath.Join(t.TempDir(), "tasks.db"), "-allow-private-callbacks")
		// … submit a task with "callback_url": rcv.URL to d.URL(), then:
		cb := rcv.Wait(t, "the task_id")
		fmt.Println(cb["success"])
		d.Stop()
	}
}

func ExampleBuffer() {
	var b tasksdtest.Buffer
	fmt.Fprintln(&b, "level=INFO msg=listening addr=127.0.0.1:8080")
	fmt.Print(b.String())
	// Output: level=INFO msg=listening addr=127.0.0.1:8080
}

// TestDaemon runs tasksd with a generated token, sends a task in callback
// mode to a signature-checking receiver, restarts with SIGKILL and stops.
func TestDaemon(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tasks.db")
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Secret: secret})
	env := []string{"TASKSD_CALLBACK_SECRET=" + secret}
	args := []string{"-db", db, "-allow-private-callbacks", "-standin-delay", "0s"}
	d := tasksdtest.Start(t, env, args...)
	if !strings.HasPrefix(d.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %q is not on loopback", d.URL())
	}
	if !strings.Contains(d.Logs(), "msg=listening") {
		t.Fatalf("Logs lack the listening line: %q", d.Logs())
	}
	// The generated token is printed on standard output, after the
	// listening line.
	var tok string
	for deadline := time.Now().Add(10 * time.Second); tok == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := tokenRE.FindStringSubmatch(d.Stdout()); m != nil {
			tok = m[1]
		}
	}
	if tok == "" {
		t.Fatalf("no generated token on standard output: %q", d.Stdout())
	}
	body, _ := json.Marshal(map[string]any{"prompt": "a cat", "callback_url": rcv.URL + "/cb"})
	req, _ := http.NewRequest("POST", d.URL()+"/openai/images/generations", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ans struct {
		TaskID string `json:"task_id"`
	}
	if json.Unmarshal(raw, &ans); resp.StatusCode != 200 || ans.TaskID == "" {
		t.Fatalf("submit: %d %s", resp.StatusCode, raw)
	}
	if cb := rcv.Wait(t, ans.TaskID); cb["success"] != true || cb["task_id"] != ans.TaskID {
		t.Fatalf("callback: %v", cb)
	}
	if got := rcv.Delivered()[ans.TaskID]; got != 1 {
		t.Fatalf("Delivered: %d callbacks for the task, want 1", got)
	}
	d.Kill()
	d2 := tasksdtest.Start(t, env, append(args, "-addr", "127.0.0.1:0")...)
	d2.Stop()
}

// TestReceiverRejectsBadSignature checks that a callback signed with another
// secret is answered 400 and reported.
func TestReceiverRejectsBadSignature(t *testing.T) {
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Secret: secret})
	req, _ := http.NewRequest("POST", rcv.URL, strings.NewReader(`{"task_id":"t1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", "t1")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	req.Header.Set("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	hits, requests, problems := rcv.Snapshot()
	if resp.StatusCode != 400 || hits["t1"] != 1 || requests != 1 || len(problems) != 1 ||
		!strings.Contains(problems[0], "signature") || len(rcv.Delivered()) != 0 {
		t.Fatalf("bad signature: %d, hits %v, requests %d, problems %q", resp.StatusCode, hits, requests, problems)
	}
}

// TestFileLimitAndMemory: StartWithFileLimit runs tasksd itself (not a
// shell) under the limit, and Memory reads its resident memory.
func TestFileLimitAndMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/limits"); err != nil {
		t.Skip("no /proc on this system")
	}
	d := tasksdtest.StartWithFileLimit(t, 200, nil, "-db", ":memory:")
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", d.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := filepath.EvalSymlinks(tasksdtest.Binary(t)); exe != want {
		t.Errorf("PID %d runs %s, want %s", d.PID(), exe, want)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", d.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Max open files\s+200\s+200\s`).Match(limits) {
		t.Errorf("limits of tasksd:\n%s", limits)
	}
	m, err := d.Memory()
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Errorf("Memory = %+v", m)
	}
	d.Stop()
}
