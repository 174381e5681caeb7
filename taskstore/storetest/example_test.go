package storetest_test

import (
	"testing"

	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storetest"
)

// A backend proves it keeps the Store contract with one test function; Run
// gives every subtest a fresh store.
func ExampleRun() {
	_ = func(t *testing.T) { // in mystore_test.go: func TestConformance(t *testing.T)
		storetest.Run(t, func(t *testing.T) taskstore.Store {
			return memstore.New() // your store, opened fresh
		})
	}
}
