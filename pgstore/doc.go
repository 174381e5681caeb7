// Package pgstore is a taskstore.Store on PostgreSQL, for deployments that
// run several replicas of a server over one shared database.
//
// Open takes a PostgreSQL URL or keyword/value connection string, as pgx
// accepts it:
//
//	postgres://user:password@host:5432/dbname?sslmode=disable
//	postgres://user@host/dbname?search_path=tasks      (tables in schema "tasks")
//	host=/var/run/postgresql dbname=tasks              (Unix socket)
//
// It connects through pgx's database/sql adapter (driver "pgx") with sqlx,
// creates or upgrades its tables, and returns a Store that passes the
// taskstore/storetest conformance suite. Its tables live in the first schema
// of the connection's search_path (normally "public"); the schema must exist.
//
// # Several replicas
//
// Every replica opens the same database. Open applies the embedded, versioned
// migrations (migrations/*.sql, recorded in schema_migrations) in order, each
// in a transaction holding a transaction-level advisory lock for the schema,
// so replicas starting at once migrate once and the others wait for it. A
// database whose schema is newer than this code fails Open with
// ErrSchemaTooNew.
//
// The callback outbox hands each due delivery to one replica at a time:
// ClaimDeliveries locks the due rows with FOR UPDATE SKIP LOCKED and moves
// their due time to now+lease in the same statement, so concurrent claimers
// take disjoint sets and a replica that dies mid-delivery simply lets its
// claim expire. The claim is recorded too (claim_ms, below): until
// RecordAttempt ends it or it expires, the delivery is in flight, and
// Redeliver leaves it to the attempt under way. Redeliver locks its rows
// with a plain FOR UPDATE, in id order: it waits for a row another replica
// is claiming or recording instead of skipping it, and decides on the row
// as that replica left it (PostgreSQL re-reads a row it waited for under
// READ COMMITTED), so a delivery claimed meanwhile is seen as in flight and
// never handed out twice; a claimer, for its part, skips a row being
// redelivered and finds it due at its next poll. RedeliverFailed takes its
// batch with FOR UPDATE SKIP LOCKED, so two of them (or one racing a
// Redeliver) take disjoint rows and a batch is never cut short by rows
// another has just made due. Run leases are simpler: Abandoned neither locks nor claims,
// so every replica may see the same task once its lease has run out, and
// Finish's exactly-once rule (the first Finish wins, the others get
// ErrConflict) is what makes finishing it as interrupted safe. FinishMany,
// which the sweepers use, locks the unfinished tasks among those listed in
// id order (two of them over overlapping lists never deadlock), re-checks
// each on the version it waited for, and finishes only those still
// unfinished, in one statement. RenewLeases takes its rows with FOR UPDATE
// SKIP LOCKED: it never waits for a row that another statement holds (a
// Start or Finish of that task) and never holds up one; the skipped task is
// renewed by the next call, a third of a lease later with the recorder.
//
// # Storage
//
// Times are bigint Unix milliseconds (0 when unset). Request and response are
// stored as PostgreSQL's json type, which checks that the text is JSON and
// keeps it byte for byte, as the Store contract requires (whitespace, key
// order and duplicate keys included). jsonb would normalize all three, so
// the exact bytes could not be given back; keeping both a json and a jsonb
// copy would double the storage of the largest columns for nothing, since no
// query of the store looks inside the JSON. Ad-hoc queries can still cast:
// request::jsonb->>'model'.
//
// Text columns use the "C" collation, so that ordering by id matches Go's
// byte-wise string order. PostgreSQL text cannot hold NUL characters: Create
// refuses strings that contain one with taskstore.ErrInvalid, and lookups of
// such ids find nothing. RecordAttempt stores an attempt's error message with
// invalid UTF-8 replaced and NUL characters removed.
//
// # Statuses
//
// A task's status and its callback's status (taskstore.Task.Status and
// CallbackStatus) are read from its columns: started_ms and finished_ms,
// the callback columns, and success, which is NULL while the task is
// unfinished and then says whether the response records a success. Create
// and Finish write it with the response, computed in Go by
// taskstore.Succeeded. The SQL function tasks_succeeded reads the same bit
// from the stored JSON (PostgreSQL's json operators also let the last of
// repeated keys win); it is used only for rows written without the column:
// by the migration below, and by a trigger for finished rows that an older
// program writes during a rolling upgrade. claim_ms holds the expiry of the
// ClaimDeliveries claim on a callback (0 when none); the delivery is in
// flight while it equals next_attempt_ms and that time has not come, so a
// write of next_attempt_ms that ignores claim_ms ends the claim.
//
// The statuses that are rare and searched for have partial indexes whose
// predicates are exactly the conditions Find writes for them: failed tasks
// (tasks_failed) and failed callbacks (tasks_callback_failed, newest first;
// tasks_callback_failed_finished, by recorder and finish time, for
// RedeliverFailed).
// Unfinished tasks (status pending or running, callback waiting) are the
// rows of tasks_unfinished, newest first, and pending callbacks those of
// tasks_outbox, both small sets; succeeded tasks and delivered callbacks are
// most rows, found by walking the other indexes newest first.
//
// No index holds started_ms, lease_ms or claim_ms, so Start and lease
// renewals change no indexed column: with room on the row's page (the table
// keeps a fifth of each page free, fillfactor 80) they are HOT updates,
// which write no index entry at all. Abandoned reads the unfinished tasks
// and sorts them by lease; finding nothing among 3,000 unfinished tasks
// costs it about 30 ms, once per lease and replica. Finish, claims and
// RecordAttempt change indexed columns (the status and outbox columns) and
// write an entry in each index whose predicate the new row meets.
//
// # Filters and totals
//
// Every filter shape of Find runs on an index: one per filter column, each
// ending in (created_ms, id) so that pages come out in order and LIMIT stops
// early, plus the status indexes above. The total of a filter made only of
// application, user, types and the two statuses is summed from counters
// that triggers keep up to date: task_counts, keyed by application, user
// and type (the only one before there were statuses, and unchanged, so a
// total without a status filter sums as few rows as before),
// task_status_counts, keyed by the same and the task and callback statuses,
// and task_totals, keyed by the two statuses alone, for the filters that
// name no application, user or type (its rows with both statuses '*' count
// every task). retrieve_batch with only callback_status failed thus sums a
// few rows, however many tasks there are. INSERT and DELETE are counted by
// statement-level triggers from their transition tables (a batch of
// creates, or a Prune, updates each key once). An UPDATE is counted by a
// row trigger that runs only for the rows whose status, callback status or
// key may change: its column list and WHEN condition (column comparisons
// only; PostgreSQL prepares them for each statement) let Start, Finish, a
// settling RecordAttempt and Redeliver through, and nothing else; it adds
// -1 to the row's old key and +1 to its new one. A lease renewal runs no
// trigger at all, a claim or a rescheduled attempt only the condition
// (about 10 µs of server time); the version 3 statement trigger cost every
// UPDATE 40 to 80 µs, claims and renewals included. Counter
// rows come in stripes, one per server process modulo 16, so that
// concurrent writes for one key do not queue on one row. Status changes
// often land on other stripes than the task's insert, so stripes drift
// apart while their sum stays exact; Prune ends by folding up to 10,000
// stripe rows of each table into one row per key (tasks_fold_counts, which
// skips rows a writer holds and never waits for one) and drops the keys
// whose count is zero; during a pass of many Prune calls, at most every
// 10 seconds. Other totals count the matching index range. A page
// and its total come from one statement, hence from one snapshot.
// Statements are prepared and cached per connection by pgx, except those of
// a Find with a created_at window, which PostgreSQL plans for their values
// each time: a window may hold one task or all of them, and no single cached
// plan suits both.
//
// # Schema versions
//
// Version 1 made the tasks table and its indexes, version 2 the counts.
// Version 3 adds the statuses: the success and claim_ms columns, the three
// status indexes, task_status_counts and task_totals, and triggers that
// keep all three counters. On an existing database it adds success with the
// value true (a catalog change, no rewrite), then updates only the
// unfinished rows (to NULL) and those whose stored response is not a
// success (to false), builds the partial indexes and the new counters from
// the rows, and ends with ANALYZE, all in the migration's one transaction
// (about 7 s for a million tasks here, most of it reading every response).
// Claims made by the previous release carry no claim_ms: Redeliver treats
// them as retries scheduled at their expiry. A replica of the previous
// release still running against the migrated schema keeps working during a
// rolling upgrade: its totals read task_counts as before, the triggers count
// its writes, its finished rows get their success bit from the
// tasks_succeeded trigger, its claims are not seen as in flight, and its
// RecordAttempt ends a claim by moving next_attempt_ms.
//
// Version 4 cuts the index and trigger work of a task's life (measured with
// BenchmarkLifecycle and BenchmarkServerCPU; see the migration's comments):
// tasks_lease, which made every lease renewal write an entry in every index,
// gives way to tasks_unfinished; the table gets fillfactor 80 (for pages
// written from then on); the statement trigger on UPDATE gives way to the
// row trigger above. On an existing database it builds tasks_unfinished
// with the table locked against writes, which reads the whole table once.
// A replica of the previous release keeps working against it: its
// statements are the same, and the triggers count its writes.
//
// Version 5 adds the recorder column (taskstore.Task.Recorder, by default
// the empty string: a catalog change, no row rewritten) and rebuilds tasks_outbox and
// tasks_callback_failed_finished led by it, so that ClaimDeliveries and
// RedeliverFailed read one recorder's range; Abandoned filters the small set
// of tasks_unfinished by it. A replica of the previous release keeps
// working against it as the default recorder: its inserts take the default
// name and its claims, which do not name a recorder, see every recorder's
// callbacks, so upgrade every replica before naming recorders.
//
// Open analyses the tables after applying any migration, so that the
// planner has statistics for what changed from the first query on. A store
// that opens on an empty (or never analysed) tasks table also analyses it
// once it has stored 1,000 tasks and again at 10,000: without statistics the
// planner takes a filter on types or a status for a selective one, and on
// 100,000 fresh tasks a retrieve_batch for pending tasks took 54 ms instead
// of 0.4 ms, until autovacuum came by (up to a minute later by default).
//
// Concurrent Creates share statements (group commit): a Create that finds
// fewer than four INSERTs in flight runs its own at once; those arriving
// while four are in flight are stored together by the next one, with one
// multi-row INSERT, so that many clients creating at once cost the server
// a few statements and commits instead of one each. Start, Finish and
// RecordAttempt do the same, each kind with one UPDATE … FROM unnest(…)
// that keeps the single-row statement's conditions row by row (a row it did
// not change is explained as a single call's would be); two calls for one
// task never share a statement.
//
// # Errors and retries
//
// Errors are translated in one place: a missing row is taskstore.ErrNotFound,
// a unique violation taskstore.ErrConflict, use after Close
// taskstore.ErrClosed, a cancelled context the context's error. Other errors
// are *Error values naming the operation and PostgreSQL's message and
// SQLSTATE, never the SQL; those that say the database could not be reached
// or the connection broke also wrap taskstore.ErrUnavailable.
//
// Serialization failures and deadlocks are retried a few times
// (WithRetries). A database that cannot be reached is retried with backoff
// (10 ms, 40 ms, 160 ms, then every half second) for as long as
// WithRetryGrace allows (DefaultRetryGrace, 5 s), so that a restart of the
// server, which takes about a second, costs its callers a wait rather than
// an error. How a failure is retried depends on whether the statement may
// have reached the server:
//
//   - It provably did not when connecting failed (connection refused,
//     57P03 the database system is starting up or shutting down, 53300 too
//     many connections), or when pgx (pgconn.SafeToRetry) or database/sql
//     (driver.ErrBadConn) gave up before sending anything. Every operation
//     retries these.
//   - It may have when the connection broke afterwards, or when the server
//     ended the session (57P01 and 57P02: a statement whose commit had
//     completed just before may have been applied, its answer lost). Only
//     the operations that are safe to repeat retry these: reads, lease
//     renewals, claims, Redeliver, and the writes whose repeat is
//     recognised. Start, Finish and RecordAttempt follow the Store
//     contract's rule that a repeat of a write already applied succeeds:
//     Start finds started_ms equal to the time it writes, Finish finds
//     finished_ms equal to its time and the stored response text equal to
//     its response byte for byte (json keeps the text as written),
//     RecordAttempt finds the claim ended and delivered_ms,
//     next_attempt_ms, last_status and last_error as it writes them (a
//     rescheduling attempt's UPDATE excludes such a row, so a repeat does
//     not count the attempt twice). Create, after a lost answer, takes a
//     row found under its id with its own creation time and request text
//     as its own (ids are fresh UUIDs); in a group-commit batch, each
//     task of the batch is checked so. Delete, Prune and RedeliverFailed
//     are not repeated once sent: a repeat of an applied one would
//     misreport (not found, or a second batch).
//
// Past the grace, or once the call's context ends or the store is closed,
// the call fails with an error wrapping taskstore.ErrUnavailable (and the
// context's error when that ended it). The store logs the database
// becoming unavailable once (Warn) and answering again once (Info), not
// every retry (Debug). Ping asks once, without retrying, for a readiness
// check. WithStartupWait makes Open wait for a database that is not up yet.
package pgstore
