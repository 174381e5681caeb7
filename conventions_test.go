package tasks_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// publicFiles parses the non-test Go files of the module's importable
// packages (everything outside internal/ and testdata/), by directory.
func publicFiles(t *testing.T) map[string][]*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	pkgs := map[string][]*ast.File{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (name == "internal" || name == "testdata" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		pkgs[dir] = append(pkgs[dir], f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// The options convention of the package documentation: constructors take
// their required arguments and then functional options (With…) of the
// package's Option type; callback.Options is the one options struct.
func TestConventionOptions(t *testing.T) {
	var structs, badWith []string
	for dir, files := range publicFiles(t) {
		for _, f := range files {
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.GenDecl:
					for _, s := range d.Specs {
						ts, ok := s.(*ast.TypeSpec)
						if !ok || !ts.Name.IsExported() {
							continue
						}
						name := ts.Name.Name
						if _, isStruct := ts.Type.(*ast.StructType); isStruct &&
							(strings.HasSuffix(name, "Options") || strings.HasSuffix(name, "Config")) {
							structs = append(structs, dir+"."+name)
						}
						if _, isFunc := ts.Type.(*ast.FuncType); name == "Option" && !isFunc {
							badWith = append(badWith, dir+".Option is not a func type")
						}
					}
				case *ast.FuncDecl:
					if d.Recv != nil || !strings.HasPrefix(d.Name.Name, "With") || !d.Name.IsExported() {
						continue
					}
					res := d.Type.Results
					if res == nil || len(res.List) != 1 || !isIdent(res.List[0].Type, "Option") {
						badWith = append(badWith, dir+"."+d.Name.Name+" does not return the package's Option")
					}
				}
			}
		}
	}
	slices.Sort(structs)
	if want := []string{"callback.Options"}; !slices.Equal(structs, want) {
		t.Errorf("exported options structs: %q, want only %q (see Conventions in doc.go)", structs, want)
	}
	for _, b := range badWith {
		t.Error(b)
	}
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}
