package metrics_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The library packages stay free of Prometheus (and of the browser-test
// driver): only internal/ and tasksd import them.
func TestLibraryHasNoPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list; skipped in -short")
	}
	pkgs := []string{"github.com/tasksapi/tasks/callback", "github.com/tasksapi/tasks/handler/...",
		"github.com/tasksapi/tasks/taskstore/...", "github.com/tasksapi/tasks/memstore",
		"github.com/tasksapi/tasks/sqlitestore", "github.com/tasksapi/tasks/pgstore"}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "prometheus") || strings.Contains(dep, "chromedp") {
			t.Errorf("a library package depends on %s", dep)
		}
	}
	if !strings.Contains(string(out), "github.com/tasksapi/tasks/handler/console") {
		t.Error("go list did not list handler/console")
	}
}
