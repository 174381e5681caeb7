package pgtest_test

import (
	"database/sql"
	"fmt"
	"testing"

	"github.com/tasksapi/tasks/internal/pgtest"
)

func ExampleWithSearchPath() {
	u, _ := pgtest.WithSearchPath("postgres://postgres@127.0.0.1:5432/tasks_test?sslmode=disable", "test_1")
	fmt.Println(u)
	k, _ := pgtest.WithSearchPath("host=127.0.0.1 dbname=tasks_test", "test_1")
	fmt.Println(k)
	// Output:
	// postgres://postgres@127.0.0.1:5432/tasks_test?search_path=test_1&sslmode=disable
	// host=127.0.0.1 dbname=tasks_test search_path=test_1
}

func TestFreshSchema(t *testing.T) {
	base := pgtest.URL(t)
	var schema string
	t.Run("Create", func(t *testing.T) {
		u := pgtest.FreshSchema(t, base)
		db, err := sql.Open("pgx", u)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRow("SELECT current_schema()").Scan(&schema); err != nil {
			t.Fatal(err)
		}
		if len(schema) != len("test_")+16 || schema[:5] != "test_" {
			t.Fatalf("current_schema() = %q, want test_<16 hex digits>", schema)
		}
		if _, err := db.Exec("CREATE TABLE t (x int)"); err != nil {
			t.Fatal(err)
		}
	})
	// The subtest's cleanup dropped the schema.
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("schema %s still exists after the test", schema)
	}
}
