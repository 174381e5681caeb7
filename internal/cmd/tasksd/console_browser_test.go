package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/internal/tasksdtest"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write docs/console.png from the browser test")

// chromiumPath finds Debian's chromium (or another Chromium-based browser).
func chromiumPath() string {
	if p := os.Getenv("TASKS_CHROMIUM"); p != "" {
		return p
	}
	// The real binary, not Debian's wrapper script, when it is there.
	for _, p := range []string{"/usr/lib/chromium/chromium"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts headless Chromium for one test, with a fresh profile and
// everything that would reach the network turned off.
func browser(t *testing.T) context.Context {
	t.Helper()
	tasksdtest.Binary(t) // skips in -short, like the other end-to-end tests
	path := chromiumPath()
	if path == "" && os.Getenv("CI") != "" {
		t.Fatal("Chromium not found, and CI must run the browser tests: .ci/run installs Debian's chromium")
	}
	if path == "" {
		t.Skip("Chromium not found (apt-get install chromium, or set TASKS_CHROMIUM); .ci/run installs it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium (%s): %v", path, err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// clearToken empties the token field, as selecting its text and deleting
// it would.
var clearToken = chromedp.Evaluate[chromedp.Void](`document.getElementById('token').value = ''`)

func act(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(t *testing.T, ctx context.Context, expr, what string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("waiting for %s (%s): %v\npage text:\n%s", what, expr, err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// screenshot takes a PNG of the whole page and checks it; with
// -update-screenshot it writes it to docs/name, for the README.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil || img.Bounds().Dx() < 1000 || img.Bounds().Dy() < 600 {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	out := filepath.Join(t.TempDir(), name)
	if *updateScreenshot {
		out = filepath.Join("..", "..", "..", "docs", name)
	}
	if err := os.WriteFile(out, shot, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The console, used as a person would in headless Chromium against the
// real tasksd: a wrong token refused, sign-in with Enter, the tasks made
// through the API with their statuses, a filter, a task's detail,
// Redeliver on a failed callback until it is delivered, and hostile task
// data shown as text without running anything. It writes the screenshot
// docs/console.png with -update-screenshot.
func TestConsoleInBrowser(t *testing.T) {
	ctx := browser(t)

	var gone atomic.Bool
	gone.Store(true)
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Secret: secret, Status: func(r callbacktest.Delivery) int {
		if strings.HasSuffix(r.Path, "/flaky") && gone.Load() {
			return http.StatusGone
		}
		return http.StatusNoContent
	}})
	d := start(t, []string{"TASKSD_CALLBACK_SECRET=" + secret},
		"-db", filepath.Join(t.TempDir(), "console.db"), "-tokens", writeTokens(t), "-allow-private-callbacks",
		"-standin-delay", "150ms")

	// Tasks made through the API, as clients would.
	submit := func(token string, body map[string]any) string {
		t.Helper()
		status, ans, raw := d.post("/openai/images/generations", token, body)
		id, _ := ans["task_id"].(string)
		if status != 200 || id == "" {
			t.Fatalf("submit %v: %d %s", body, status, raw)
		}
		return id
	}
	var ids []string
	for i, p := range []string{"A lighthouse at dusk", "A red bicycle", "Isometric city block", "Mountain lake, morning"} {
		ids = append(ids, submit(tokenA, map[string]any{"prompt": p, "size": "256x256",
			"callback_url": rcv.URL + "/cb", "trace_id": fmt.Sprintf("order-%d", 1040+i)}))
	}
	failedCB := submit(tokenB, map[string]any{"prompt": "A paper crane", "size": "256x256",
		"callback_url": rcv.URL + "/flaky", "trace_id": "invoice-77"})
	failedTask := submit(tokenB, map[string]any{"prompt": "bad size", "size": "13x13",
		"callback_url": rcv.URL + "/cb", "trace_id": "invoice-78"})
	status, ans, raw := d.post("/openai/chat/completions", tokenA, map[string]any{"model": "gpt-4o",
		"messages": []map[string]any{{"role": "user", "content": "Draw a lantern"}}, "callback_url": rcv.URL + "/cb", "trace_id": "chat-9"})
	chatTask, _ := ans["task_id"].(string)
	if status != 200 || chatTask == "" {
		t.Fatalf("chat submit: %d %s", status, raw)
	}
	asyncTask := submit(tokenA, map[string]any{"prompt": "An async owl", "size": "256x256", "async": true})
	for _, id := range append(ids, failedTask, chatTask) {
		waitCallback(t, d, tokenOp, id, "delivered")
	}
	waitCallback(t, d, tokenOp, failedCB, "failed")
	waitFinished(t, d, tokenOp, asyncTask)

	// Every request the page makes: on this origin, never with the token.
	var reqMu sync.Mutex
	var requests []string
	reqs := chromedp.Events(ctx, network.RequestWillBeSent)
	go func() {
		for ev, err := range reqs {
			if err != nil {
				return
			}
			reqMu.Lock()
			requests = append(requests, ev.Request.URL+ev.Request.URLFragment)
			reqMu.Unlock()
		}
	}()
	var dialogs atomic.Int64
	dlg := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dlg {
			if err != nil {
				return
			}
			dialogs.Add(1)
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()

	// Script errors and CSP violations (logged as errors by the browser):
	// none is expected. Refused requests (the wrong tokens) are logged as
	// network errors, which are expected.
	var problemsMu sync.Mutex
	var pageProblems []string
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	logs := chromedp.Events(ctx, cdplog.EntryAdded)
	go func() {
		for ev, err := range logs {
			if err != nil {
				return
			}
			if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
				problemsMu.Lock()
				pageProblems = append(pageProblems, string(ev.Entry.Source)+": "+ev.Entry.Text)
				problemsMu.Unlock()
			}
		}
	}()
	exceptions := chromedp.Events(ctx, cdpruntime.ExceptionThrown)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			problemsMu.Lock()
			pageProblems = append(pageProblems, "exception: "+ev.ExceptionDetails.Text)
			problemsMu.Unlock()
		}
	}()

	// A wrong token, and a tenant's, are refused.
	act(t, ctx, chromedp.Navigate(d.URL()+"/console/"), chromedp.WaitVisible(chromedp.ID("token")))
	for _, bad := range []string{"not-a-token", tokenA} {
		act(t, ctx, clearToken, chromedp.SendKeys(chromedp.ID("token"), bad+"\n"))
		waitJS(t, ctx, `document.getElementById('login-error').textContent.includes('not accepted')`, "the refusal of "+bad)
		if js[bool](t, ctx, `!document.getElementById('app-view').hidden || sessionStorage.length > 0`) {
			t.Fatalf("token %q was let in", bad)
		}
	}

	// The operator signs in with Enter and sees the counts and the list.
	act(t, ctx, clearToken, chromedp.SendKeys(chromedp.ID("token"), tokenOp+"\n"),
		chromedp.WaitVisible(chromedp.ID("app-view")))
	waitJS(t, ctx, `document.querySelectorAll('#tasks tbody tr').length === 8`, "eight rows")
	waitJS(t, ctx, `document.querySelector('#task-counts [data-count=succeeded]')?.textContent === '7'`, "seven succeeded")
	if got := js[string](t, ctx, `document.querySelector('#task-counts [data-count=failed]').textContent + '/' + document.querySelector('#callback-counts [data-count=failed]').textContent + '/' + document.querySelector('#callback-counts [data-count=delivered]').textContent`); got != "1/1/6" {
		t.Errorf("counts failed tasks/failed callbacks/delivered: %s", got)
	}
	if js[string](t, ctx, `sessionStorage.getItem('tasksd.console.token')`) != tokenOp ||
		js[int](t, ctx, `localStorage.length`) != 0 || js[string](t, ctx, `document.cookie`) != "" {
		t.Error("the token is not kept in sessionStorage alone")
	}
	type row struct{ ID, Status, Type, Trace, Callback string }
	rows := func() map[string]row {
		var rs []row
		raw := js[[]byte](t, ctx, `Array.from(document.querySelectorAll('#tasks tbody tr')).map(r => ({ID: r.dataset.id,
			Status: r.cells[1].textContent, Type: r.cells[2].textContent, Trace: r.cells[3].textContent, Callback: r.cells[6].textContent}))`)
		json.Unmarshal(raw, &rs)
		m := map[string]row{}
		for _, r := range rs {
			m[r.ID] = r
		}
		return m
	}
	got := rows()
	for _, id := range ids {
		if r := got[id]; r.Status != "succeeded" || r.Callback != "delivered" || r.Type != "images_generations" || !strings.HasPrefix(r.Trace, "order-") {
			t.Errorf("row %s: %+v", id, r)
		}
	}
	if r := got[failedCB]; r.Status != "succeeded" || r.Callback != "failed" || r.Trace != "invoice-77" {
		t.Errorf("failed callback row: %+v", r)
	}
	if r := got[failedTask]; r.Status != "failed" || r.Callback != "delivered" {
		t.Errorf("failed task row: %+v", r)
	}
	if r := got[chatTask]; r.Status != "succeeded" || r.Type != "chat_completions_image" {
		t.Errorf("chat task row: %+v", r)
	}
	if r := got[asyncTask]; r.Status != "succeeded" || r.Callback != "none" {
		t.Errorf("async task row: %+v", r)
	}

	// The screenshot: the list as the operator first sees it.
	screenshot(t, ctx, "console.png")

	// Filter on the failed callbacks: one row.
	act(t, ctx, chromedp.SetValue(chromedp.CSS(`#filters select[name=callback_status]`), "failed"),
		chromedp.Click(chromedp.CSS(`#filters button[type=submit]`)))
	waitJS(t, ctx, `document.querySelectorAll('#tasks tbody tr').length === 1 && document.querySelector('#tasks tbody tr').dataset.id === `+jsString(failedCB), "the failed callback alone")
	waitJS(t, ctx, `document.getElementById('range').textContent === '1–1 of 1'`, "the range 1–1 of 1")

	// Its detail: the callback failed after a 410; press Redeliver once the
	// receiver is fixed, and see it delivered.
	act(t, ctx, chromedp.Click(chromedp.CSS(`#tasks tbody tr td.id a`)), chromedp.WaitVisible(chromedp.ID("detail-view")))
	waitJS(t, ctx, `document.getElementById('d-id').textContent === `+jsString(failedCB), "the detail")
	waitJS(t, ctx, `document.getElementById('d-callback').textContent.includes('410')`, "the last status 410")
	if s := js[string](t, ctx, `document.querySelector('#d-callback .badge').textContent`); s != "failed" {
		t.Fatalf("callback status in the detail: %q", s)
	}
	waitJS(t, ctx, `document.querySelectorAll('#d-thumbs img').length === 1 && document.querySelector('#d-thumbs img').naturalWidth === 256`, "the response's image as a thumbnail")
	if !js[bool](t, ctx, `document.getElementById('d-request').textContent.includes('"trace_id": "invoice-77"')`) {
		t.Error("the request is not shown pretty-printed")
	}
	gone.Store(false)
	act(t, ctx, chromedp.Click(chromedp.ID("redeliver")))
	waitJS(t, ctx, `document.getElementById('notice').textContent.includes('due again')`, "the redeliver confirmation")
	waitJS(t, ctx, `document.querySelector('#d-callback .badge')?.textContent === 'delivered'`, "the callback delivered")
	screenshot(t, ctx, "console-task.png")
	if hits, _, problems := rcv.Snapshot(); hits[failedCB] != 2 || len(problems) > 0 {
		t.Errorf("receiver saw %d deliveries of %s (problems %v)", hits[failedCB], failedCB, problems)
	}

	// Hostile task data is shown as text: nothing runs.
	traceXSS := `<script>window.__xss=1</script>`
	promptXSS := `"><img src=x onerror="window.__xss=2;alert(2)"> <svg onload=alert(3)>`
	userXSS := `javascript:window.__xss=3`
	xssID := submit(tokenA, map[string]any{"prompt": promptXSS, "size": "256x256", "user": userXSS,
		"callback_url": rcv.URL + "/cb", "trace_id": traceXSS})
	xss2 := submit(tokenA, map[string]any{"prompt": "x", "size": "256x256", "async": true,
		"trace_id": `"><img src=x onerror=alert(1)>`})
	waitCallback(t, d, tokenOp, xssID, "delivered")
	waitFinished(t, d, tokenOp, xss2)
	act(t, ctx, chromedp.Click(chromedp.ID("back")), chromedp.WaitVisible(chromedp.ID("list-view")),
		chromedp.Click(chromedp.CSS(`#filters button[type=reset]`)))
	waitJS(t, ctx, `document.querySelectorAll('#tasks tbody tr').length === 10`, "ten rows")
	if r := rows()[xssID]; r.Trace != traceXSS {
		t.Errorf("the hostile trace id reads %q in the list", r.Trace)
	}
	if r := rows()[xss2]; r.Trace != `"><img src=x onerror=alert(1)>` {
		t.Errorf("the second hostile trace id reads %q in the list", r.Trace)
	}
	act(t, ctx, chromedp.Click(chromedp.CSS(`#tasks tbody tr[data-id="`+xssID+`"] td.id a`)), chromedp.WaitVisible(chromedp.ID("detail-view")))
	waitJS(t, ctx, `document.getElementById('d-id').textContent === `+jsString(xssID), "the hostile task's detail")
	waitJS(t, ctx, `document.getElementById('d-response').textContent.includes('revised_prompt')`, "the response")
	for _, want := range []string{traceXSS, userXSS} {
		if !js[bool](t, ctx, `document.getElementById('d-request').textContent.includes(`+jsString(want)+`)`) {
			t.Errorf("the request does not show %q literally", want)
		}
	}
	if !js[bool](t, ctx, `document.getElementById('d-task').textContent.includes(`+jsString(traceXSS)+`)`) {
		t.Error("the trace id is not shown literally")
	}
	if !js[bool](t, ctx, `document.getElementById('d-response').textContent.includes(JSON.stringify(`+jsString(promptXSS)+`))`) {
		t.Error("the response does not show the prompt literally")
	}
	time.Sleep(300 * time.Millisecond) // give an injected handler its chance
	if v := js[string](t, ctx, `String(window.__xss)`); v != "undefined" {
		t.Errorf("injected script ran: window.__xss = %s", v)
	}
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d dialogs opened", n)
	}
	if n := js[int](t, ctx, `document.querySelectorAll('script:not([src]), [onerror], [onload], img[src="x"], svg[onload]').length`); n != 0 {
		t.Errorf("%d injected elements in the DOM", n)
	}

	// Sign out: the token is gone.
	act(t, ctx, chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("token")))
	if js[int](t, ctx, `sessionStorage.length`) != 0 {
		t.Error("the token outlives sign-out")
	}

	problemsMu.Lock()
	for _, p := range pageProblems {
		t.Errorf("page error: %s", p)
	}
	problemsMu.Unlock()
	reqMu.Lock()
	defer reqMu.Unlock()
	if len(requests) < 10 {
		t.Errorf("only %d requests seen", len(requests))
	}
	for _, u := range requests {
		if strings.HasPrefix(u, "data:") {
			continue // Chromium's own icons of the date inputs: no request
		}
		if !strings.HasPrefix(u, d.URL()+"/") {
			t.Errorf("the page requested %s, outside its origin", u)
		}
		for _, tok := range []string{tokenOp, tokenA} {
			if strings.Contains(u, tok) {
				t.Errorf("a token is in the URL %s", u)
			}
		}
	}
	d.Stop()
}
