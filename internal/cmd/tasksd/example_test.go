package main

import (
	"fmt"
	"io"
)

// Flags win over TASKSD_* environment variables, which win over the
// defaults; a variable's name is the flag's in upper case, dashes as
// underscores.
func Example_configuration() {
	env := map[string]string{"TASKSD_QUEUE": "8", "TASKSD_WORKERS": "2"}
	c, err := parseConfig([]string{"-workers", "4", "-db", ":memory:"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Addr, c.DB, c.Workers, c.Queue)
	// Output: 127.0.0.1:8080 :memory: 4 8
}
