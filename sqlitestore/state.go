package sqlitestore

import (
	"database/sql/driver"
	"fmt"
	"strconv"
	"strings"

	"modernc.org/sqlite"

	"github.com/tasksapi/tasks/taskstore"
)

// The state column (migrations/0003_status.sql) is a task's status and
// callback status in one small integer: 10*status + callback, with these
// digits.
var (
	statusDigit = map[taskstore.Status]int{
		taskstore.StatusPending: 0, taskstore.StatusRunning: 1,
		taskstore.StatusSucceeded: 2, taskstore.StatusFailed: 3,
	}
	callbackDigit = map[taskstore.CallbackStatus]int{
		taskstore.CallbackNone: 0, taskstore.CallbackWaiting: 1, taskstore.CallbackPending: 2,
		taskstore.CallbackDelivered: 3, taskstore.CallbackFailed: 4,
	}
)

// allStates are the values the state column takes, in order: an unfinished
// task's callback is none or waiting, a finished task's anything but
// waiting.
var allStates = []int{0, 1, 10, 11, 20, 22, 23, 24, 30, 32, 33, 34}

// Where the tasks of each state are listed (see 0003_status.sql): the
// final states in tasks_done, in page order; the unfinished ones in
// tasks_lease and those whose callback is pending in tasks_outbox, neither
// in page order.
const (
	// doneStates is the condition of the partial index tasks_done (the
	// states 20, 23, 24, 30, 33, 34), written the same way so that SQLite
	// can use the index.
	doneStates = `state >= 20 AND state % 10 <> 2`
	// unfinishedCond is the condition of the partial index tasks_lease.
	unfinishedCond = `finished_ms = 0`
)

func isDone(st int) bool { return st >= 20 && st%10 != 2 }

// filterStates returns the states matching a status and a callback status
// filter (either may be empty: any), in increasing order; none when the two
// cannot hold together (a pending task with a delivered callback).
func filterStates(st taskstore.Status, cb taskstore.CallbackStatus) []int {
	var out []int
	for _, s := range allStates {
		if (st == "" || s/10 == statusDigit[st]) && (cb == "" || s%10 == callbackDigit[cb]) {
			out = append(out, s)
		}
	}
	return out
}

// stateTerm is the SQL condition "state is one of states" (as
// filterStates gives them), with the states written as literals: they come
// from a closed set, and a literal lets SQLite seek tasks_done on an
// equality. It never writes an IN list of more than two values, for which
// SQLite would build a temporary table on every run: a status alone is a
// range of ten values.
func stateTerm(states []int) string {
	switch n := len(states); {
	case n == 1:
		return "state = " + strconv.Itoa(states[0])
	case n == 2:
		return fmt.Sprintf("state IN (%d, %d)", states[0], states[1])
	case states[0]/10 == states[n-1]/10:
		lo := states[0] / 10 * 10
		return fmt.Sprintf("state BETWEEN %d AND %d", lo, lo+9)
	}
	parts := make([]string, len(states))
	for i, s := range states {
		parts[i] = "state = " + strconv.Itoa(s)
	}
	return "(" + strings.Join(parts, " OR ") + ")"
}

// counterSum is the SQL sum of the task_counts columns of the given states.
func counterSum(states []int) string {
	parts := make([]string, len(states))
	for i, s := range states {
		parts[i] = fmt.Sprintf("s%02d", s)
	}
	return strings.Join(parts, " + ")
}

// splitStates divides states by where their tasks are listed.
func splitStates(states []int) (done, lease, outbox []int) {
	for _, s := range states {
		switch {
		case s < 20:
			lease = append(lease, s)
		case isDone(s):
			done = append(done, s)
		default:
			outbox = append(outbox, s)
		}
	}
	return done, lease, outbox
}

// succeededFunc is the SQL function through which migration 0003 gives
// the tasks finished before it their success bit: taskstore.Succeeded on
// the stored response, the same function Create and Finish use.
const succeededFunc = "sqlitestore_succeeded"

func init() {
	sqlite.MustRegisterDeterministicScalarFunction(succeededFunc, 1,
		func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
			var ok bool
			switch v := args[0].(type) {
			case string:
				ok = taskstore.Succeeded([]byte(v))
			case []byte:
				ok = taskstore.Succeeded(v)
			}
			if ok {
				return int64(1), nil
			}
			return int64(0), nil
		})
}
