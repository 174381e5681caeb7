-- Schema version 1: the tasks table and the indexes every query runs on.
--
-- Times are Unix milliseconds (bigint), 0 when unset. Strings are '' when
-- unset and use the "C" collation, so that ORDER BY id sorts by bytes as Go
-- compares strings (and text comparisons skip locale rules). Request and
-- response are of type json, not jsonb: PostgreSQL checks that they are JSON
-- but keeps the text exactly as given (jsonb would drop whitespace, reorder
-- keys and drop duplicate keys; the store contract wants the bytes back).
-- response is NULL until the task finishes.
CREATE TABLE tasks (
    id              text   COLLATE "C" PRIMARY KEY,
    trace_id        text   COLLATE "C" NOT NULL DEFAULT '',
    type            text   COLLATE "C" NOT NULL,
    created_ms      bigint NOT NULL,
    started_ms      bigint NOT NULL DEFAULT 0,
    finished_ms     bigint NOT NULL DEFAULT 0,
    application_id  text   COLLATE "C" NOT NULL DEFAULT '',
    user_id         text   COLLATE "C" NOT NULL DEFAULT '',
    credential_id   text   COLLATE "C" NOT NULL DEFAULT '',
    callback_url    text   COLLATE "C" NOT NULL DEFAULT '',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_ms bigint NOT NULL DEFAULT 0,
    delivered_ms    bigint NOT NULL DEFAULT 0,
    last_status     integer NOT NULL DEFAULT 0,
    last_error      text   COLLATE "C" NOT NULL DEFAULT '',
    lease_ms        bigint NOT NULL DEFAULT 0,
    request         json   NOT NULL,
    response        json
);

-- Listing: every index ends in (created_ms, id), so a page comes out of the
-- index already ordered newest first (scanned backwards) and LIMIT stops
-- early; counts over a window are index-only range scans.
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
