package memstore_test

import (
	"testing"

	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore/storetest"
)

// A Store not made by New answers errors, not panics.
func TestZeroStore(t *testing.T) { storetest.RunZero(t, &memstore.Store{}) }
