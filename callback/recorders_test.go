package callback_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/webhook"
	"github.com/tasksapi/tasks/taskstore"
)

// newSecret returns a random signing secret and its key.
func newSecret(t testing.TB) (string, []byte) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	return webhook.SecretPrefix + base64.StdEncoding.EncodeToString(key), key
}

// hookCounts counts one recorder's hook calls.
type hookCounts struct {
	created, finished, attempted, delivered atomic.Int64
	mu                                      sync.Mutex
	ids                                     []string // delivered
}

func (h *hookCounts) hooks() callback.Hooks {
	return callback.Hooks{
		TaskCreated:  func(context.Context, callback.TaskEvent) { h.created.Add(1) },
		TaskFinished: func(context.Context, callback.TaskEvent) { h.finished.Add(1) },
		DeliveryAttempted: func(_ context.Context, ev callback.DeliveryEvent) {
			h.attempted.Add(1)
			if ev.Delivered {
				h.delivered.Add(1)
				h.mu.Lock()
				h.ids = append(h.ids, ev.TaskID)
				h.mu.Unlock()
			}
		},
	}
}

// submitN submits n tasks to rec, each answering at once, with callbacks
// to url, and returns their ids.
func submitN(t *testing.T, rec *callback.Recorder, n int, url string) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id, err := rec.Submit(context.Background(),
			callback.Submission{Type: "images_generations", Request: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`), CallbackURL: url},
			func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{"data":[]}`), nil })
		if err != nil {
			t.Fatalf("Submit %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestRecordersOnOneStore is the scenario of issue #16: two recorders of
// different names and secrets on one store, 200 tasks submitted to the
// first. Every callback is signed with the first's secret, and the
// second's hooks never fire; then the second's own tasks are delivered,
// signed with its secret, while the first's are left alone.
func TestRecordersOnOneStore(t *testing.T) {
	forEachStore(t, func(t *testing.T, store taskstore.Store) {
		secretA, keyA := newSecret(t)
		secretB, keyB := newSecret(t)
		var ha, hb hookCounts
		a := newRecorder(t, store, callback.Options{Name: "images", Secret: secretA, Hooks: ha.hooks()})
		b := newRecorder(t, store, callback.Options{Name: "edits", Secret: secretB, Hooks: hb.hooks(),
			Schedule: callback.Schedule{0, time.Millisecond}})
		rc := newReceiver(t, nil)

		idsA := submitN(t, a, 200, rc.URL+"/cb")
		eventually(t, "200 callbacks of the first recorder", func() bool { return ha.delivered.Load() == 200 })
		checkSigned := func(want map[string]bool, key []byte, n int) {
			t.Helper()
			got := 0
			for _, d := range rc.deliveries() {
				id := d.header.Get("webhook-id")
				if !want[id] {
					continue
				}
				got++
				ts, err := strconv.ParseInt(d.header.Get("webhook-timestamp"), 10, 64)
				if err != nil {
					t.Fatalf("webhook-timestamp %q", d.header.Get("webhook-timestamp"))
				}
				if sig := d.header.Get("webhook-signature"); !slices.Contains(strings.Fields(sig), webhook.Sign(key, id, ts, d.body)) {
					t.Errorf("callback of %s signed %q: not with its recorder's secret", id, sig)
				}
			}
			if got != n {
				t.Fatalf("%d deliveries of the recorder's tasks, want %d", got, n)
			}
		}
		setA := map[string]bool{}
		for _, id := range idsA {
			setA[id] = true
		}
		checkSigned(setA, keyA, 200)
		if rc.count() != 200 {
			t.Fatalf("the receiver got %d callbacks, want 200", rc.count())
		}
		if n := hb.attempted.Load() + hb.finished.Load() + hb.created.Load(); n != 0 {
			t.Fatalf("the second recorder's hooks fired %d times for the first's tasks", n)
		}
		for _, id := range idsA[:3] {
			if got := getTask(t, store, id); got.Recorder != "images" {
				t.Fatalf("task %s stored with recorder %q, want images", id, got.Recorder)
			}
		}

		// The second recorder's own deliveries proceed, with its settings.
		idsB := submitN(t, b, 20, rc.URL+"/cb")
		eventually(t, "20 callbacks of the second recorder", func() bool { return hb.delivered.Load() == 20 })
		setB := map[string]bool{}
		for _, id := range idsB {
			setB[id] = true
		}
		checkSigned(setB, keyB, 20)
		if ha.delivered.Load() != 200 || ha.attempted.Load() != 200 {
			t.Fatalf("the first recorder attempted %d deliveries, want its 200", ha.attempted.Load())
		}

		// Redeliver and Recover keep to the recorder's own tasks.
		done, err := a.Redeliver(context.Background(), idsB[0], idsA[0], "unknown", idsA[0], "\xff", strings.Repeat("x", 300))
		if err != nil || !slices.Equal(done, []string{idsA[0]}) {
			t.Fatalf("first.Redeliver(second's, own, unknown, own, invalid ids) = %v, %v; want only its own", done, err)
		}
		eventually(t, "the redelivery", func() bool { return ha.delivered.Load() == 201 })
		if got := getTask(t, store, idsB[0]); got.Callback.Attempts != 1 || got.CallbackStatus() != taskstore.CallbackDelivered {
			t.Fatalf("the second's task was redelivered by the first: %+v", got.Callback)
		}
		done, err = b.Redeliver(context.Background(), idsB[0])
		if err != nil || !slices.Equal(done, []string{idsB[0]}) {
			t.Fatalf("second.Redeliver(own) = %v, %v", done, err)
		}
		eventually(t, "the second's redelivery", func() bool { return hb.delivered.Load() == 21 })
		checkSigned(map[string]bool{idsB[0]: true}, keyB, 2)
	})
}

// TestRecordersRecoverOwn: Recover makes due again only the recorder's own
// failed callbacks.
func TestRecordersRecoverOwn(t *testing.T) {
	store := newMemStore(t)
	var gone atomic.Bool
	gone.Store(true)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if gone.Load() {
			w.WriteHeader(http.StatusGone) // given up at once
		}
	})
	var ha, hb hookCounts
	a := newRecorder(t, store, callback.Options{Name: "a", Hooks: ha.hooks()})
	b := newRecorder(t, store, callback.Options{Name: "b", Hooks: hb.hooks()})
	idsA, idsB := submitN(t, a, 3, rc.URL), submitN(t, b, 2, rc.URL)
	eventually(t, "every callback given up", func() bool { return ha.attempted.Load() == 3 && hb.attempted.Load() == 2 })
	gone.Store(false)
	n, err := a.Recover(context.Background(), time.Time{})
	if err != nil || n != 3 {
		t.Fatalf("a.Recover = %d, %v; want its 3", n, err)
	}
	eventually(t, "a's redeliveries", func() bool { return ha.delivered.Load() == 3 })
	for _, id := range idsB {
		if st := getTask(t, store, id).CallbackStatus(); st != taskstore.CallbackFailed {
			t.Fatalf("b's task %s is %s after a.Recover, want failed", id, st)
		}
	}
	if n, err := b.Recover(context.Background(), time.Time{}); err != nil || n != 2 {
		t.Fatalf("b.Recover = %d, %v; want its 2", n, err)
	}
	eventually(t, "b's redeliveries", func() bool { return hb.delivered.Load() == 2 })
	_ = idsA
}

// TestRecordersSoleOwner: a SoleOwner recorder's first sweep finishes the
// tasks a previous process of its name left, never the running tasks of a
// recorder of another name on the same store.
func TestRecordersSoleOwner(t *testing.T) {
	store := newMemStore(t)
	a := newRecorder(t, store, callback.Options{Name: "a", SoleOwner: true})
	release := make(chan struct{})
	defer close(release)
	running, err := a.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
		func(ctx context.Context) (json.RawMessage, error) {
			<-release
			return json.RawMessage(`{}`), nil
		})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a's task running", func() bool { return getTask(t, store, running).Status() == taskstore.StatusRunning })
	// Left by a previous process of b, its lease far ahead.
	left := storeTask(t, store, func(task *taskstore.Task) {
		task.Recorder = "b"
		task.LeaseUntil = time.Now().Add(time.Hour)
	})
	newRecorder(t, store, callback.Options{Name: "b", SoleOwner: true})
	waitFinished(t, store, left.ID)
	if got := getTask(t, store, running); got.Finished() {
		t.Fatalf("b's recovery finished a's running task: %s", got.Response)
	}
}

// TestRecordersSameName: in one process, New refuses a second recorder of
// the same name on the same store with other settings, and allows
// replicas (the same settings), other names, other stores, and the same
// name once the first is closed.
func TestRecordersSameName(t *testing.T) {
	store := newMemStore(t)
	secret1, _ := newSecret(t)
	secret2, _ := newSecret(t)
	first := newRecorder(t, store, callback.Options{Name: "svc", Secret: secret1})
	for _, tc := range []struct {
		what   string
		change func(*callback.Options)
	}{
		{"Secret", func(o *callback.Options) { o.Secret = secret2 }},
		{"Schedule", func(o *callback.Options) { o.Schedule = callback.Schedule{0, time.Second} }},
		{"AllowPrivateNetworks", func(o *callback.Options) { o.AllowPrivateNetworks = false }},
		{"Hooks", func(o *callback.Options) { o.Hooks.TaskFinished = func(context.Context, callback.TaskEvent) {} }},
	} {
		rec, err := startRecorder(t, store, callback.Options{Name: "svc", Secret: secret1}, tc.change)
		if err == nil {
			rec.Close(context.Background())
			t.Fatalf("New accepted a second recorder \"svc\" with another %s", tc.what)
		}
		if !errors.Is(err, callback.ErrNameInUse) || !strings.Contains(err.Error(), tc.what) || !strings.Contains(err.Error(), `"svc"`) {
			t.Fatalf("other %s: error %v, want ErrNameInUse naming it", tc.what, err)
		}
		if strings.Contains(err.Error(), secret1[7:]) || strings.Contains(err.Error(), secret2[7:]) {
			t.Fatalf("the error quotes a secret: %v", err)
		}
	}
	// Replicas: the same name and settings.
	replica := newRecorder(t, store, callback.Options{Name: "svc", Secret: secret1})
	// Other names, another store.
	newRecorder(t, store, callback.Options{Name: "other", Secret: secret2})
	newRecorder(t, newMemStore(t), callback.Options{Name: "svc", Secret: secret2})
	// Once every "svc" on the store is closed, another may take the name.
	for _, r := range []*callback.Recorder{first, replica} {
		if err := r.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	newRecorder(t, store, callback.Options{Name: "svc", Secret: secret2})
}

// TestRecorderNameInvalid: Options.Name is at most 64 printable ASCII
// characters, and the error says so.
func TestRecorderNameInvalid(t *testing.T) {
	store := newMemStore(t)
	for _, tc := range []struct{ name, want string }{
		{strings.Repeat("n", 65), "at most 64"},
		{"new\nline", "printable ASCII"},
		{"caf\u00e9", "printable ASCII"},
	} {
		rec, err := startRecorder(t, store, callback.Options{Name: tc.name})
		if err == nil {
			rec.Close(context.Background())
			t.Fatalf("New accepted Name %q", tc.name)
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Name") {
			t.Fatalf("Name %q: error %q, want it to say %q", tc.name, err, tc.want)
		}
	}
	newRecorder(t, store, callback.Options{Name: strings.Repeat("n", 64)})
	newRecorder(t, store, callback.Options{Name: "svc A/v2 ~"})
}

// unhashableStore is a store wrapper whose type is comparable but whose
// value is not: an interface field holding a map.
type unhashableStore struct {
	taskstore.Store
	extra any
}

// TestRecordersUnhashableStore: New does not panic on a store value that
// cannot be a map key; such a store is simply not registered by name.
func TestRecordersUnhashableStore(t *testing.T) {
	store := unhashableStore{newMemStore(t), map[string]int{}}
	rec := newRecorder(t, store, callback.Options{Name: "svc"})
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestRecordersSoleOwnerAlone: a SoleOwner recorder must be the only one
// of its name on its store in this process, whichever comes first.
func TestRecordersSoleOwnerAlone(t *testing.T) {
	store := newMemStore(t)
	first := newRecorder(t, store, callback.Options{Name: "svc"})
	if rec, err := startRecorder(t, store, callback.Options{Name: "svc", SoleOwner: true}, func(*callback.Options) {}); err == nil {
		rec.Close(context.Background())
		t.Fatal("New accepted a SoleOwner recorder beside another of its name")
	} else if !errors.Is(err, callback.ErrNameInUse) || !strings.Contains(err.Error(), "SoleOwner") {
		t.Fatalf("error %v, want ErrNameInUse naming SoleOwner", err)
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	newRecorder(t, store, callback.Options{Name: "svc", SoleOwner: true})
	if rec, err := startRecorder(t, store, callback.Options{Name: "svc"}, func(*callback.Options) {}); err == nil {
		rec.Close(context.Background())
		t.Fatal("New accepted a recorder beside a SoleOwner one of its name")
	}
	newRecorder(t, store, callback.Options{Name: "other"})
}
