package callback

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/tasksapi/tasks/taskstore"
)

// Several recorders on one store. Every task carries the name of the
// recorder that created it (Options.Name, stored as taskstore.Task.Recorder)
// and a recorder claims, sweeps and recovers only the tasks of its name, so
// each delivers its own callbacks with its own Secret, Schedule,
// AllowPrivateNetworks and Hooks. Recorders that share a name share the
// work: they are replicas and must be configured alike. Within one process
// New checks that, through a registry of the recorders running per store
// and name.

// ErrNameInUse: New was given a store on which a recorder of the same
// Options.Name, with other settings, is already running in this process.
// The returned error wraps it with the settings that differ.
var ErrNameInUse = errors.New("callback: a recorder of this name with other settings is already running on this store")

// checkName validates Options.Name (taskstore.CheckRecorder).
func checkName(name string) error {
	if err := taskstore.CheckRecorder(name); err != nil {
		return fmt.Errorf("Name %q: %w", name, err)
	}
	return nil
}

// nameKey identifies the recorders of one name on one store: the store
// value given to New (a wrapper around a store is another store) and the
// name.
type nameKey struct {
	store taskstore.Store
	name  string
}

// settings are the options that decide how a recorder delivers, as far as
// they can be compared: the Hooks by which of them are set.
type settings struct {
	secret   string
	schedule string
	private  bool
	hooks    string // the names of the hooks set
}

func settingsOf(o Options) settings {
	var sched []string
	for _, d := range o.Schedule {
		sched = append(sched, d.String())
	}
	var hooks []string
	v := reflect.ValueOf(o.Hooks)
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Func && !f.IsNil() {
			hooks = append(hooks, v.Type().Field(i).Name)
		}
	}
	return settings{secret: o.Secret, schedule: strings.Join(sched, ","), private: o.AllowPrivateNetworks,
		hooks: strings.Join(hooks, ",")}
}

// diff names the settings in which s and t differ.
func (s settings) diff(t settings) []string {
	var out []string
	if s.secret != t.secret {
		out = append(out, "Secret")
	}
	if s.schedule != t.schedule {
		out = append(out, fmt.Sprintf("Schedule (%s, this one %s)", s.schedule, t.schedule))
	}
	if s.private != t.private {
		out = append(out, fmt.Sprintf("AllowPrivateNetworks (%v, this one %v)", s.private, t.private))
	}
	if s.hooks != t.hooks {
		out = append(out, fmt.Sprintf("the Hooks set (%q, this one %q)", s.hooks, t.hooks))
	}
	return out
}

// nameEntry is the recorders of one key running in this process.
type nameEntry struct {
	settings  settings
	soleOwner bool // one of them is a SoleOwner
	n         int
}

var names = struct {
	mu sync.Mutex
	m  map[nameKey]*nameEntry
}{m: make(map[nameKey]*nameEntry)}

// claimName registers a recorder with options o on store. It gives an
// error wrapping ErrNameInUse when a recorder of the same name with other
// settings runs on the same store in this process. The returned function
// releases the registration (once; Close calls it). A store value that is
// not comparable (its type, or an interface inside it holding a map, a
// slice or a func) cannot be told apart from another and is not registered.
func claimName(store taskstore.Store, o Options) (release func(), err error) {
	if !reflect.ValueOf(store).Comparable() {
		return func() {}, nil
	}
	k, s := nameKey{store, o.Name}, settingsOf(o)
	names.mu.Lock()
	defer names.mu.Unlock()
	e := names.m[k]
	if e == nil {
		e = &nameEntry{settings: s, soleOwner: o.SoleOwner}
		names.m[k] = e
	} else if o.SoleOwner || e.soleOwner {
		return nil, fmt.Errorf("%w: recorder %q already runs on this store in this process, and a SoleOwner recorder must be the only one of its name (its first sweep would finish the other's running tasks as interrupted)",
			ErrNameInUse, o.Name)
	} else if d := e.settings.diff(s); len(d) > 0 {
		return nil, fmt.Errorf("%w: recorder %q differs in %s; give each service its own Options.Name (replicas share a name and their settings)",
			ErrNameInUse, o.Name, strings.Join(d, ", "))
	}
	e.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			names.mu.Lock()
			defer names.mu.Unlock()
			if e.n--; e.n == 0 {
				delete(names.m, k)
			}
		})
	}, nil
}

// ownTasks returns the ids, in the order given and each once, of the tasks
// this recorder created (Task.Recorder is its Name): Redeliver makes due
// only those, as another recorder's callback is its own to deliver.
// Unknown ids are left out.
func (r *Recorder) ownTasks(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	page, _, err := r.store.Find(ctx, taskstore.Filter{IDs: ids, Limit: len(ids)})
	if err != nil {
		return nil, err
	}
	mine := make(map[string]bool, len(page))
	for _, t := range page {
		mine[t.ID] = t.Recorder == r.o.Name
	}
	out := make([]string, 0, len(page))
	for _, id := range ids {
		if mine[id] {
			out = append(out, id)
			mine[id] = false // each once
		}
	}
	return out, nil
}
