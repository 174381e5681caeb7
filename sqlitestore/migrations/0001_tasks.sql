-- Schema version 1: the tasks table and the indexes every query runs on.
--
-- Times are Unix milliseconds (INTEGER), 0 when unset. Strings are '' when
-- unset. JSON is TEXT checked by json_valid; response is NULL until the task
-- finishes. Large columns (request, response) come last so that reading the
-- small ones never follows an overflow chain.
CREATE TABLE tasks (
    rid             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL,
    trace_id        TEXT    NOT NULL DEFAULT '',
    type            TEXT    NOT NULL,
    created_ms      INTEGER NOT NULL,
    started_ms      INTEGER NOT NULL DEFAULT 0,
    finished_ms     INTEGER NOT NULL DEFAULT 0,
    application_id  TEXT    NOT NULL DEFAULT '',
    user_id         TEXT    NOT NULL DEFAULT '',
    credential_id   TEXT    NOT NULL DEFAULT '',
    callback_url    TEXT    NOT NULL DEFAULT '',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    delivered_ms    INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    lease_ms        INTEGER NOT NULL DEFAULT 0,
    request         TEXT    NOT NULL CHECK (json_valid(request)),
    response        TEXT             CHECK (response IS NULL OR json_valid(response))
) STRICT;

-- Lookups by id.
CREATE UNIQUE INDEX tasks_id ON tasks (id);

-- Listing: every index ends in (created_ms, id) so that a page comes out of
-- the index already ordered newest first and LIMIT stops early.
CREATE INDEX tasks_created ON tasks (created_ms, id);
CREATE INDEX tasks_trace   ON tasks (trace_id, created_ms, id) WHERE trace_id <> '';
CREATE INDEX tasks_app     ON tasks (application_id, created_ms, id);
CREATE INDEX tasks_user    ON tasks (user_id, created_ms, id);
CREATE INDEX tasks_type    ON tasks (type, created_ms, id);

-- The callback outbox: pending deliveries only, earliest due first.
CREATE INDEX tasks_outbox ON tasks (next_attempt_ms, id)
    WHERE callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms <> 0;

-- Run leases of unfinished tasks, oldest first.
CREATE INDEX tasks_lease ON tasks (lease_ms, id) WHERE finished_ms = 0;
