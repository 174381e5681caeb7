package tasks_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goBlock matches a fenced Go block of a Markdown file.
var goBlock = regexp.MustCompile("(?s)```go\n(.*?)```")

// Every Go block of the README is a whole program that compiles and passes
// go vet against this module, so that what an embedder copies works as it
// says.
func TestREADMEGoBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the README's programs with the go command")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlock.FindAllSubmatch(readme, -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d Go blocks in README.md, want the mount program and the receiver at least", len(blocks))
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	// The programs live inside the module (a directory go ignores, since
	// its name starts with "_"), so that they import this module's
	// packages as they are now.
	dir, err := os.MkdirTemp(".", "_readme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var pkgs []string
	for i, b := range blocks {
		src := string(b[1])
		if !strings.HasPrefix(src, "package main\n") {
			t.Errorf("Go block %d of README.md is not a whole program (package main): %.80q", i+1, src)
			continue
		}
		sub := filepath.Join(dir, "block"+string(rune('a'+i)))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "main.go"), b[1], 0o644); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, "./"+filepath.ToSlash(sub))
	}
	for _, args := range [][]string{
		append([]string{"build", "-o", os.DevNull}, pkgs...),
		append([]string{"vet"}, pkgs...),
	} {
		cmd := exec.Command(gobin, args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("go %s: %v\n%s", args[0], err, out)
		}
	}
}
