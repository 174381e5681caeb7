-- Schema version 4: fewer index entries and trigger runs per task.
--
-- Measured with BenchmarkLifecycle (three replicas, 16 submitters, 20,000
-- tasks) on version 3: 7.2 row updates per task, of which 10% were HOT
-- (heap-only: no new index entry); a task's life wrote about 10 KB of WAL;
-- RenewLeases (3.2 of the 7.2 updates) averaged 84 ms, locking rows FOR
-- UPDATE and holding them while Start and Finish on those rows waited
-- (3.5 and 2.7 ms on average); and the statement trigger that keeps the
-- status counters ran for every UPDATE, 68,000 times at 0.4 ms, although
-- claims and renewals change no status.

-- 1. Unfinished tasks are indexed by creation time instead of by lease.
-- tasks_lease (lease_ms, id) put lease_ms in an index, so that every lease
-- renewal wrote a new entry in every index of the table (an update is HOT
-- only when no indexed column changes). Abandoned, the only reader ordered
-- by lease, now reads the unfinished tasks (a small set: the queued and
-- running ones) and sorts them by lease; Find's pending and running
-- filters, and the callback status waiting, walk the new index newest
-- first as every other filter does.
DROP INDEX tasks_lease;
CREATE INDEX tasks_unfinished ON tasks (created_ms, id) WHERE finished_ms = 0;

-- 2. Room on each page for the new version of an updated row, so that an
-- update that changes no indexed column (Start, a lease renewal) can stay
-- on the row's page and be HOT. A row grows once in its life, when Finish
-- writes the response; 80 leaves a fifth of each page free. (It applies to
-- pages written from now on: existing pages fill up as before until they
-- are rewritten.)
ALTER TABLE tasks SET (fillfactor = 80);

-- 3. The status counters are kept by row triggers whose column lists and
-- WHEN conditions let through only the updates that may change a task's
-- status, callback status, application, user or type: those that change
-- whether started_ms, finished_ms, delivered_ms or next_attempt_ms is 0,
-- success, whether callback_url is empty, or a key column. Start, Finish,
-- a delivered or given-up attempt and Redeliver pass; claims and
-- rescheduled attempts stop at the condition, and lease renewals (which set
-- no listed column) run nothing at all. The conditions compare columns
-- only, and as few as possible: PostgreSQL prepares a trigger's WHEN
-- condition again for each statement, and a condition calling
-- tasks_status() cost about 60 µs of server time per statement, one with
-- nine comparisons about 17 µs, a column list that does not match nothing.
-- Each change adds -1 to the old key and +1 to the new one (nothing when
-- they are the same), in the stripe of the server process, as the
-- statement trigger did. INSERT and DELETE keep their statement triggers,
-- which count a batch of creates or a Prune at once.
--
-- Lock order: a single-row change locks its keys in order (task_status_
-- counts, then task_totals), so two of them never deadlock. A statement
-- changing the statuses of several rows (Redeliver, RedeliverFailed) runs
-- the trigger row after row and may, on rare occasions, lock keys of the
-- same stripe in another order than a concurrent change; PostgreSQL then
-- aborts one of them (deadlock_detected), and pgstore runs it again.
DROP TRIGGER tasks_status_count_update ON tasks;
DROP FUNCTION tasks_status_count_update();

CREATE FUNCTION tasks_status_count_row() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    -- One statement, as in the statement triggers (task_status_counts
    -- first, then task_totals in its WITH clause), each table's keys in
    -- key order.
    WITH k (a, u, t, s, cb, d) AS MATERIALIZED (
        VALUES (OLD.application_id, OLD.user_id, OLD.type, tasks_status(OLD.started_ms, OLD.finished_ms, OLD.success),
                tasks_callback_status(OLD.callback_url, OLD.finished_ms, OLD.delivered_ms, OLD.next_attempt_ms), -1),
               (NEW.application_id, NEW.user_id, NEW.type, tasks_status(NEW.started_ms, NEW.finished_ms, NEW.success),
                tasks_callback_status(NEW.callback_url, NEW.finished_ms, NEW.delivered_ms, NEW.next_attempt_ms), 1)
    ), totals AS (
        INSERT INTO task_totals AS c (status, callback_status, stripe, n)
        SELECT s, cb, pg_backend_pid() % 16, sum(d) FROM k GROUP BY s, cb HAVING sum(d) <> 0
        ORDER BY s COLLATE "C", cb COLLATE "C"
        ON CONFLICT (status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n
    )
    INSERT INTO task_status_counts AS c (application_id, user_id, type, status, callback_status, stripe, n)
    SELECT a, u, t, s, cb, pg_backend_pid() % 16, sum(d) FROM k GROUP BY a, u, t, s, cb HAVING sum(d) <> 0
    ORDER BY a COLLATE "C", u COLLATE "C", t COLLATE "C", s COLLATE "C", cb COLLATE "C"
    ON CONFLICT (application_id, user_id, type, status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

-- The trigger for the changes the Store makes: a column list (checked
-- before anything else, at no cost) and the smallest WHEN condition that
-- sees every status change.
CREATE TRIGGER tasks_status_count_row AFTER UPDATE OF started_ms, finished_ms, success, delivered_ms, next_attempt_ms ON tasks
    FOR EACH ROW
    WHEN ((OLD.started_ms = 0) <> (NEW.started_ms = 0)
       OR (OLD.finished_ms = 0) <> (NEW.finished_ms = 0)
       OR (OLD.delivered_ms = 0) <> (NEW.delivered_ms = 0)
       OR (OLD.next_attempt_ms = 0) <> (NEW.next_attempt_ms = 0)
       OR OLD.success IS DISTINCT FROM NEW.success)
    EXECUTE FUNCTION tasks_status_count_row();

-- The trigger for the changes the Store never makes (an edit by hand of the
-- callback URL, the application, the user or the type): it runs only when
-- the first would not, so that a change is never counted twice.
CREATE TRIGGER tasks_status_count_keys AFTER UPDATE OF callback_url, application_id, user_id, type ON tasks
    FOR EACH ROW
    WHEN (((OLD.callback_url = '') <> (NEW.callback_url = '')
        OR OLD.application_id IS DISTINCT FROM NEW.application_id
        OR OLD.user_id IS DISTINCT FROM NEW.user_id
        OR OLD.type IS DISTINCT FROM NEW.type)
      AND NOT ((OLD.started_ms = 0) <> (NEW.started_ms = 0)
        OR (OLD.finished_ms = 0) <> (NEW.finished_ms = 0)
        OR (OLD.delivered_ms = 0) <> (NEW.delivered_ms = 0)
        OR (OLD.next_attempt_ms = 0) <> (NEW.next_attempt_ms = 0)
        OR OLD.success IS DISTINCT FROM NEW.success))
    EXECUTE FUNCTION tasks_status_count_row();
