// Package tasks gives a Go image-API server callback mode and the Tasks API.
//
// Callback mode: a client sends an image request (JSON, or multipart for
// image edits) with a "callback_url" field. The server stores a task and
// answers at once with {"task_id":"…"}; the work runs in the background; its
// result is recorded on the task and POSTed to the callback URL, with retries,
// at least once, even across a crash or restart, optionally signed with
// Standard Webhooks. "async": true without a callback URL also makes a task,
// for clients that poll.
//
// The Tasks API: one POST endpoint (conventionally /<service>/tasks) where a
// client looks a task up ({"action":"retrieve","id":…} or by "trace_id"),
// lists many ({"action":"retrieve_batch", …} with ids, trace_ids,
// application_id, user_id, type, a created_at window, the task's status and
// its callback's status, paged, with the total count), makes callbacks due
// again ({"action":"redeliver", …}), or deletes one. Every record says where
// the task is ("status": pending, running, succeeded or failed) and, for a
// callback-mode task, where its callback is ("callback": waiting, pending,
// delivered or failed, with the attempts made). Every lookup is scoped to
// the caller's application and user; a task of another tenant is
// indistinguishable from a missing one.
//
// # Packages
//
//   - taskstore: the domain — Task, Filter, Principal, the Store interface and
//     its sentinel errors. taskstore/storetest is the conformance suite every
//     store passes (yours too).
//   - memstore: a Store in memory, for tests and ephemeral servers.
//   - sqlitestore: a Store on one SQLite file (pure Go, no cgo), for a single
//     server process.
//   - pgstore: a Store on PostgreSQL, for several replicas sharing one database.
//   - handler: the Tasks API as an http.Handler, plus bearer-token
//     authentication middleware. handler/console is an operator's web
//     console (tasks and callbacks by status, a task's detail, Redeliver)
//     to mount next to it.
//   - callback: the recorder — middleware that turns callback-mode requests
//     into stored tasks, runs the wrapped image handler, records the response
//     and delivers the callback.
//
// The self-hosted binary is internal/cmd/tasksd: `go run ./internal/cmd/tasksd`
// serves everything on 127.0.0.1:8080 with an SQLite file and a built-in
// stand-in image generator; `tasksd copy` moves every task between stores
// (SQLite to PostgreSQL and back) and `tasksd backup` backs an SQLite store
// up while it serves.
//
// # Mounting
//
//	store, err := sqlitestore.Open("tasks.db")
//	// handle err; defer store.Close()
//	auth := handler.Tokens(map[string]taskstore.Principal{"secret-token": {ApplicationID: "app-1"}})
//	rec, err := callback.New(store, callback.Options{Secret: os.Getenv("CALLBACK_SECRET")})
//	// handle err; defer rec.Close(ctx)
//	mux := http.NewServeMux()
//	mux.Handle("POST /openai/images/generations", handler.Authenticate(auth, rec.Wrap("images_generations", imagesHandler)))
//	mux.Handle("/openai/tasks", handler.New(store, auth))
//
// See the README for the wire contract, configuration and guarantees.
package tasks
