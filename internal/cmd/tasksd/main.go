// Command tasksd serves the Tasks API and callback mode in front of an
// OpenAI-compatible image API, or in front of a built-in stand-in generator
// so that it runs on a fresh machine with no network and no keys.
//
//	go run ./internal/cmd/tasksd            # 127.0.0.1:8080, tasks.db, stand-in generator
//	go run ./internal/cmd/tasksd -h         # every flag
//
// Two subcommands serve operators (-h after either explains it):
//
//	tasksd copy -from tasks.db -to postgres://…   # copy every task to another store, then verify
//	tasksd backup -db tasks.db -to backup.db       # a consistent backup while tasksd serves
//
// Every flag can also be set through the environment as TASKSD_<FLAG>, upper
// case, dashes as underscores (TASKSD_UPSTREAM_KEY, TASKSD_CALLBACK_SECRET…);
// a flag on the command line wins. Prefer the environment for secrets.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: the usage is printed already
		}
		fmt.Fprintln(os.Stderr, "tasksd:", err)
		os.Exit(1)
	}
}
