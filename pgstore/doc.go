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
// claim expire. Run leases are simpler: Abandoned neither locks nor claims,
// so every replica may see the same task once its lease has run out, and
// Finish's exactly-once rule (the first Finish wins, the others get
// ErrConflict) is what makes finishing it as interrupted safe.
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
// Every filter shape of Find runs on an index: one per filter column, each
// ending in (created_ms, id) so that pages come out in order and LIMIT stops
// early. The total of a filter made only of application, user and types is
// summed from a small task_counts table that triggers keep up to date, in
// stripes so that concurrent creates for one key do not queue on one row;
// other totals count the matching index range. A page and its total come
// from one statement, hence from one snapshot. Statements are prepared and
// cached per connection by pgx, except those of a Find with a created_at
// window, which PostgreSQL plans for their values each time: a window may
// hold one task or all of them, and no single cached plan suits both.
//
// Concurrent Creates share statements (group commit): a Create that finds
// fewer than four INSERTs in flight runs its own at once; those arriving
// while four are in flight are stored together by the next one, with one
// multi-row INSERT, so that many clients creating at once cost the server
// a few statements and commits instead of one each.
//
// # Errors and retries
//
// Errors are translated in one place: a missing row is taskstore.ErrNotFound,
// a unique violation taskstore.ErrConflict, use after Close
// taskstore.ErrClosed, a cancelled context the context's error. Other errors
// name the operation and PostgreSQL's message and SQLSTATE, never the SQL.
// Serialization failures and deadlocks are retried (a few attempts with
// jittered backoff); lost connections are retried for operations that are
// safe to repeat (reads, lease renewals, claims) and for any
// operation when the statement provably never reached the server.
package pgstore
