package taskstore_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The package shows the domain only: the functions and methods an embedder
// using a Store needs. Helpers for Store implementers live in
// taskstore/storekit; JSON writing helpers in internal/jsonw. A new exported
// function or method here is a decision: add it to the list.
func TestExportedFuncs(t *testing.T) {
	want := []string{
		"CallbackStatus.Valid",
		"CheckRecorder",
		"Cursor.IsStart",
		"Filter.Validate",
		"FromContext",
		"NewContext",
		"Principal.CanSee",
		"Principal.IsOperator",
		"Principal.Scope",
		"Reason",
		"Status.Valid",
		"Succeeded",
		"Task.AppendJSON",
		"Task.CallbackStatus",
		"Task.Clone",
		"Task.Cursor",
		"Task.Finished",
		"Task.MarshalJSON",
		"Task.Status",
		"Task.UnmarshalJSON",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || !fd.Name.IsExported() {
				continue
			}
			name := fd.Name.Name
			if fd.Recv != nil {
				typ := fd.Recv.List[0].Type
				if star, ok := typ.(*ast.StarExpr); ok {
					typ = star.X
				}
				recv := typ.(*ast.Ident).Name
				if !ast.IsExported(recv) {
					continue
				}
				name = recv + "." + name
			}
			got = append(got, name)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("exported functions and methods of taskstore:\n got %q\nwant %q", got, want)
	}
}
