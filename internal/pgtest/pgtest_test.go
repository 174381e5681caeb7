package pgtest_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
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

// TestProxy: the proxy passes traffic, refuses connections while down and
// cuts a chosen statement before or after the server runs it.
func TestProxy(t *testing.T) {
	base := pgtest.FreshSchema(t, pgtest.URL(t))
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p := pgtest.NewProxy(t, u.Host)
	db, err := sql.Open("pgx", p.URL(base))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (x text)"); err != nil {
		t.Fatal(err)
	}
	for _, after := range []bool{false, true} {
		marker := fmt.Sprintf("marker-%v", after)
		done := make(chan struct{})
		p.Cut(&pgtest.Cut{Match: []byte(marker), AfterSend: after, Done: done})
		if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES ($1)", marker); err == nil {
			t.Fatalf("after=%v: the cut statement succeeded", after)
		}
		<-done
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t WHERE x = $1", marker).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{false: 0, true: 1}[after]; n != want {
			t.Fatalf("after=%v: %d rows stored, want %d", after, n, want)
		}
	}
	p.Down()
	if err := db.PingContext(ctx); err == nil {
		t.Fatal("Ping succeeded through a proxy that is down")
	}
	p.Up()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("Ping after Up: %v", err)
	}
}

// TestCluster: a cluster of the test's own starts, restarts and stops.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("initdb takes seconds; skipped in -short")
	}
	c := pgtest.NewCluster(t)
	db, err := sql.Open("pgx", c.URL("tasks"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if err := db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	if d := c.Restart(); d <= 0 {
		t.Fatalf("Restart took %v", d)
	}
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("Ping after Restart: %v", err)
	}
	c.Stop()
	if err := db.PingContext(ctx); err == nil {
		t.Fatal("Ping succeeded with the server stopped")
	}
	c.Start()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("Ping after Start: %v", err)
	}
}
