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
//     store passes (yours too); taskstore/storekit holds the helpers a store
//     is written with (argument checks, Normalize, millisecond times).
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
// # Conventions
//
// Every package follows the same rules, so that what is learnt in one holds in
// the others.
//
// Options: constructors take their required arguments and then functional
// options (With…), as in handler.New(store, auth, handler.WithLogger(l)) or
// sqlitestore.Open(path, sqlitestore.WithBusyTimeout(d)); an option left out
// keeps the documented default. A component configured by many independent
// settings that embedders also build from flags or files takes one Options
// struct whose zero fields mean the documented default: that is
// callback.Options, and only it.
//
// Errors: failures the caller can act on are the sentinels of taskstore
// (ErrNotFound, ErrConflict, ErrInvalid, ErrClosed, ErrUnavailable) and of
// each package (callback.ErrClosed, handler.ErrNoToken, …), wrapped with
// context: test them with errors.Is. taskstore.Reason gives the part of an
// ErrInvalid error to show a client. Any other failure of a store is a system
// failure, of the store's own type (sqlitestore.Error, pgstore.Error): the
// operation (Op), the database's code as a string (Code: "SQLITE_FULL",
// SQLSTATE "53300"), a message without SQL text or file paths, and Unwrap
// giving the driver's error (and taskstore.ErrUnavailable when the store
// cannot reach its data).
//
// Logging: every component that logs does so through log/slog and takes an
// optional *slog.Logger (WithLogger, or callback.Options.Logger). None, or
// nil, means slog.Default() as it is when the component is built (New,
// Open); pass slog.New(slog.DiscardHandler) for silence. The one function
// that logs without taking a logger, the handler.Authenticate middleware,
// uses slog.Default() as it is when Authenticate is called.
// What callers need is returned as an error; logs carry the details that
// errors leave out (driver messages, retries, a database coming and going).
//
// See the README for the wire contract, configuration and guarantees.
package tasks
