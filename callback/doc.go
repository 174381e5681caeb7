// Package callback gives an image-API server "callback mode": a request that
// carries a callback_url is stored as a task, answered at once with its id,
// run in the background by the handler the server already has, and its
// response POSTed to the callback URL, reliably, with the store as the
// outbox.
//
// Mount it around an existing handler:
//
//	rec, err := callback.New(store, callback.Options{Secret: "whsec_…"})
//	…
//	defer rec.Close(ctx)
//	mux.Handle("POST /openai/images/generations",
//		handler.Authenticate(auth, rec.Wrap("images_generations", images)))
//
// Servers whose work is not an http.Handler use Recorder.Submit.
//
// Task ids are version 7 UUIDs (github.com/google/uuid's NewV7): 48 bits of
// creation time in milliseconds and 12 bits of sub-millisecond sequence, so
// the ids of one process sort in creation order and a store's id index
// grows at its end rather than at a random page per task, then 62 random
// bits. Anyone who sees an id (the client, the callback receiver) can read
// when the task was created, to a fraction of a millisecond.
//
// # Responses
//
// When a task ends, its response is recorded with Store.Finish and is,
// byte for byte, the body of its callback:
//
//   - success (the handler answered 2xx with a JSON object): the object with
//     "success":true, "task_id" and "trace_id" first, then the upstream's
//     members in their order (members named success, task_id or trace_id
//     dropped), compacted:
//     {"success":true,"task_id":"…","trace_id":"…","created":1721626477,"data":[…]}
//   - failure: {"success":false,"task_id":"…","trace_id":"…","error":{"code":"…","message":"…"}}
//     for a non-2xx answer (the upstream's own error.code and error.message
//     kept when they are non-empty strings, else "api_error" and "upstream
//     returned status N"), a 2xx answer that is not a JSON object, a panic,
//     a timeout (code "timeout") or a shutdown or crash (code "interrupted").
//
// "trace_id" is left out everywhere when the client gave none.
//
// # Delivery
//
// Callbacks are delivered at least once, across restarts: a finished task's
// callback is due in the store in the same write as its response, a delivery
// loop claims due callbacks (so several processes sharing a store do not
// send the same attempt twice), and every attempt is recorded on the task.
// 2xx is delivered; 410 Gone, and an address refused by the SSRF guard, give
// up; anything else is retried on the Schedule, honouring Retry-After. Every
// attempt of a task's callback carries the same webhook-id (the task id) and,
// with a Secret, a Standard Webhooks signature.
//
// Deliveries share Options.DeliveryWorkers slots; one receiver (host and
// port) takes at most Options.DeliveriesPerHost of them and one principal's
// tasks Options.DeliveriesPerPrincipal, so that a receiver that hangs, or a
// tenant with many callbacks, leaves room for the others. A receiver that
// fails Options.HostFailures attempts in a row (no answer, a timeout, 5xx,
// 408 or 429) is paused: its due callbacks go back to the store for later
// without counting an attempt (taskstore.Store.DeferDeliveries), then one
// attempt at a time probes it, the pause doubling while it fails. Failed
// attempts are summed up in the log per receiver every Options.LogInterval,
// with each attempt's details at Debug level.
//
// Unless Options.AllowPrivateNetworks, the SSRF guard refuses loopback,
// private, link-local, multicast, unspecified and other special-purpose
// addresses when it connects, on the resolved address. A callback_url whose
// host is such an address written as an IP literal (in any spelling:
// IPv4-mapped, IPv4-translated, bracketed IPv6, a trailing dot), or the
// name localhost or a name under .localhost, is refused before anything is
// stored: Wrap answers 400 bad_request naming callback_url and the address,
// Submit returns ErrBadCallbackURL. Other names are accepted and checked
// when connecting.
//
// Recorder.Redeliver makes the callbacks of finished tasks due again
// whatever their status (the Tasks API's redeliver action calls it when
// given the recorder with handler.WithRedeliverer), and Recorder.Recover
// does it for every failed callback of the tasks finished since a time; both
// start the deliveries at once. A redelivered callback keeps its webhook-id
// and body, and its attempts count on.
//
// # Several recorders on one store
//
// Every task carries the name of the recorder that created it
// (Options.Name, stored as taskstore.Task.Recorder; "" by default). A
// recorder claims the deliveries, sweeps the abandoned tasks and recovers
// the failed callbacks of its own name only, so several services sharing a
// store (say, one per handler.WithTypes mount) each run a recorder of their
// own name and each delivers its tasks with its own Secret, Schedule,
// AllowPrivateNetworks and Hooks. Its Redeliver leaves other recorders'
// tasks out. Replicas of one service (processes sharing a database) run
// recorders of one name and share its deliveries; they must be configured
// alike. In one process, New refuses a second recorder of a name already
// running on the same store value with another Secret, Schedule,
// AllowPrivateNetworks or set of Hooks (ErrNameInUse), until the first is
// closed. Options.SoleOwner declares the recorder the only one of its name:
// recorders of other names may share the store, in this process or
// another, and its first sweep never touches their tasks.
//
// # Limits
//
// Every limit is an Options field with a default. Request bodies are read
// as their bytes arrive, never sized by a declared Content-Length. A
// callback-mode body is held in memory, at most Options.MaxBodyBytes; a
// task's stored request is at most Options.MaxRequestBytes. A request
// without callback_url is not limited by the recorder: Wrap holds its first
// MiB in memory and spills the rest to a temporary file (os.CreateTemp, in
// $TMPDIR) while it looks for the callback-mode fields, then streams the
// whole body to the handler; the file is unlinked when created where the
// system allows it, and closed and removed when the handler returns. Cap
// such bodies in front of Wrap (http.MaxBytesReader) if the handler does
// not. Accepted tasks wait in Options.Queue places, a
// principal (application and user) taking at most Options.QueuePerPrincipal,
// and the bodies they hold in memory until their run ends are bounded by
// Options.QueueBytes (Options.QueueBytesPerPrincipal per principal); beyond
// any of them a submission gets 429 too_many_requests and nothing is
// stored. The workers take the principals with queued tasks in turn, so a
// principal that queued many tasks does not hold up another's.
//
// # Failure and shutdown
//
// Queued and running tasks hold a lease in the store, renewed while this
// process lives. Close lets them finish until its context ends and records
// the rest as "interrupted", returning within about a second of the
// context's end even when the store hangs (what it could not record is then
// left as a crash leaves it). A task whose process crashed is found by the
// sweeper of any recorder once its lease expires (at once with
// Options.SoleOwner) and finished as "interrupted", so no task stays
// unfinished forever and its callback is still sent. The sweeper finishes
// such tasks in batches, in the background (New never waits for it), and
// logs one line per pass.
//
// A store that cannot reach its data for a while (an error wrapping
// taskstore.ErrUnavailable, such as pgstore's while PostgreSQL restarts)
// loses no result: a task's start, its response and the outcome of a
// delivery attempt are kept in memory and written again and again, with
// backoff, for up to Options.StoreGrace, within about a second of the store
// answering again, while the lease renewer goes on renewing. A callback the
// receiver accepted is therefore not sent a second time because its
// recording failed. The Store contract makes these writes safe to repeat (a
// repeat of a write whose answer was lost succeeds), and the recorder passes
// the same explicit times each time. A callback-mode request that cannot be
// stored meanwhile is answered 503 with Retry-After.
//
// # Metrics and tracing
//
// Options.Hooks are called when a task is created, starts and finishes,
// and after each delivery attempt, each with the context of what it
// reports on (the request's values, the task's run context, the attempt's);
// Recorder.Stats reads the counters. Options.WrapTransport wraps the
// transport of the deliveries (with otelhttp.NewTransport, say) while the
// SSRF guard stays in the dialer underneath. The README's "Metrics"
// section shows what tasksd builds on them, and its "Guarantees" section
// sums up what the recorder promises.
package callback
