//go:build !(linux || darwin)

package main

// sqliteInUse cannot ask about SQLite's locks on this system: known is
// false, and the copy reads the source's leases instead.
func sqliteInUse(path string) (inUse, known bool, err error) { return false, false, nil }
