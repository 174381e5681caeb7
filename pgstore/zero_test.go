package pgstore_test

import (
	"testing"

	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/taskstore/storetest"
)

// A Store not made by Open answers errors, not panics.
func TestZeroStore(t *testing.T) { storetest.RunZero(t, &pgstore.Store{}) }
