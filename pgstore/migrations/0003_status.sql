-- Schema version 3: task status, callback status and redelivery.
--
-- A task's status (pending, running, succeeded, failed) and its callback's
-- status (none, waiting, pending, delivered, failed) are functions of its
-- columns; two of them are new:
--
--   success   NULL while the task is unfinished; once finished, whether its
--             response records a success (a JSON object whose top-level
--             "success" member is true, the last one when the key repeats).
--             The store writes it from Go (taskstore.Succeeded) with the
--             response. tasks_succeeded below reads it from the stored JSON
--             the same way; it fills the column for rows finished before this
--             version, and for rows finished by a program that does not
--             write the column (a replica of the previous release still
--             running during a rolling upgrade).
--   claim_ms  the expiry of the ClaimDeliveries claim on the callback, 0 when
--             none. A claim moves next_attempt_ms to its expiry and sets
--             claim_ms to the same value; RecordAttempt and Redeliver set it
--             back to 0. A delivery is in flight while claim_ms <> 0,
--             claim_ms = next_attempt_ms and that time has not come: any
--             write of next_attempt_ms without claim_ms (the previous release's
--             RecordAttempt) ends the claim by itself.
--
-- Existing rows: the column is added with the default true (a catalog
-- change, no rewrite), then only unfinished rows (back to NULL) and rows
-- whose response is not a success (false) are updated; the default is then
-- dropped.
ALTER TABLE tasks
    ADD COLUMN success  boolean DEFAULT true,
    ADD COLUMN claim_ms bigint NOT NULL DEFAULT 0;

-- Whether a response records a success, as taskstore.Succeeded decides it.
-- PostgreSQL's json operators read an object's members as Succeeded does
-- (keys unescaped, the last duplicate wins, only the top level), but they
-- fail on a \u0000 escape, on a lone surrogate (and, in a database that is
-- not UTF-8, on any non-ASCII escape) anywhere in the object. Such escapes
-- are first replaced by the letter x (and x is appended after each escaped
-- backslash, so that "\\u0000" is left alone): a key holding one can never
-- read "success", and a string stays a string, so the answer is unchanged.
CREATE FUNCTION tasks_succeeded(response json) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce((
    CASE WHEN response::text ~ '\\u(0000|00[89a-fA-F]|0[1-9a-fA-F]|[1-9a-fA-F])'
        THEN regexp_replace(response::text, '(\\\\)|\\u(?:0000|00[89a-fA-F]|0[1-9a-fA-F]|[1-9a-fA-F])', '\1x', 'g')::json
        ELSE response
    END -> 'success')::text = 'true', false)
$$;

UPDATE tasks SET success = NULL WHERE finished_ms = 0;
UPDATE tasks SET success = false WHERE finished_ms <> 0 AND NOT tasks_succeeded(response);
ALTER TABLE tasks ALTER COLUMN success DROP DEFAULT;

-- A finished row written without success (by an older program) gets it
-- from its response. The store always writes it, so for its own writes the
-- WHEN condition is false and the function never runs.
CREATE FUNCTION tasks_fill_success() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    NEW.success := tasks_succeeded(NEW.response);
    RETURN NEW;
END
$$;

CREATE TRIGGER tasks_fill_success BEFORE INSERT OR UPDATE ON tasks
    FOR EACH ROW WHEN (NEW.finished_ms <> 0 AND NEW.success IS NULL)
    EXECUTE FUNCTION tasks_fill_success();

-- The statuses as the Tasks API names them (taskstore.Task.Status and
-- CallbackStatus); '' is a task without a callback.
CREATE FUNCTION tasks_status(started_ms bigint, finished_ms bigint, success boolean) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN finished_ms <> 0 THEN CASE WHEN success THEN 'succeeded' ELSE 'failed' END
    WHEN started_ms <> 0 THEN 'running'
    ELSE 'pending'
END
$$;

CREATE FUNCTION tasks_callback_status(callback_url text, finished_ms bigint, delivered_ms bigint, next_attempt_ms bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN callback_url = '' THEN ''
    WHEN finished_ms = 0 THEN 'waiting'
    WHEN delivered_ms <> 0 THEN 'delivered'
    WHEN next_attempt_ms <> 0 THEN 'pending'
    ELSE 'failed'
END
$$;

-- Indexes of the statuses that are rare and looked for: failed tasks,
-- failed callbacks (newest first for Find, by finish time for
-- RedeliverFailed). Their predicates are exactly the conditions Find writes
-- for these statuses, so the planner can prove they apply. The other
-- statuses are dense (succeeded, delivered) and come out of the existing
-- indexes, or are small sets with an index of their own already: unfinished
-- tasks (pending, running, callback waiting) are tasks_lease's rows, pending
-- callbacks tasks_outbox's. No new index holds started_ms or claim_ms, so
-- Start and ClaimDeliveries add no index entries.
CREATE INDEX tasks_failed ON tasks (created_ms, id)
    WHERE finished_ms <> 0 AND NOT success;
CREATE INDEX tasks_callback_failed ON tasks (created_ms, id)
    WHERE callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms = 0;
CREATE INDEX tasks_callback_failed_finished ON tasks (finished_ms, id)
    WHERE callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms = 0;

-- The counts gain the two statuses. task_counts keeps counting all the
-- tasks of each (application, user, type), as before (so that a total
-- without a status filter sums as few rows as before, and a replica of the
-- previous release still reads right totals). task_status_counts counts
-- them per key, status and callback status, and task_totals per status and
-- callback status alone, for the totals of filters that name no
-- application, user or type; its rows with both statuses '*' count every
-- task.
--
-- Stripes as before: a statement adds to the stripe of its server process
-- (0 to 15). Status changes add -1 to the old status and +1 to the new one,
-- often on other stripes than the task's insert, so the stripes of a key
-- drift apart while their sum stays right. tasks_fold_counts (run by Prune)
-- moves them into stripe -1, which no trigger writes, and drops the keys
-- that sum to zero.
--
-- Version 2's row trigger tasks_count_update, which moves a task between
-- the keys of task_counts when its application, user or type is edited by
-- hand, stays; the other three triggers are replaced.
DROP TRIGGER tasks_count_insert ON tasks;
DROP TRIGGER tasks_count_delete ON tasks;
DROP TRIGGER tasks_count_truncate ON tasks;
DROP FUNCTION tasks_count_insert();
DROP FUNCTION tasks_count_delete();
DROP FUNCTION tasks_count_truncate();

-- The rows tasks_fold_counts has still to fold, in key order.
CREATE INDEX task_counts_unfolded ON task_counts (application_id, user_id, type, stripe) WHERE stripe >= 0;

CREATE TABLE task_status_counts (
    application_id  text     COLLATE "C" NOT NULL,
    user_id         text     COLLATE "C" NOT NULL,
    type            text     COLLATE "C" NOT NULL,
    status          text     COLLATE "C" NOT NULL,
    callback_status text     COLLATE "C" NOT NULL,
    stripe          smallint NOT NULL,
    n               bigint   NOT NULL,
    PRIMARY KEY (application_id, user_id, type, status, callback_status, stripe)
);
CREATE INDEX task_status_counts_user ON task_status_counts (user_id, type, status, callback_status);
CREATE INDEX task_status_counts_type ON task_status_counts (type, status, callback_status);
CREATE INDEX task_status_counts_unfolded ON task_status_counts (application_id, user_id, type, status, callback_status, stripe)
    WHERE stripe >= 0;

CREATE TABLE task_totals (
    status          text     COLLATE "C" NOT NULL,
    callback_status text     COLLATE "C" NOT NULL,
    stripe          smallint NOT NULL,
    n               bigint   NOT NULL,
    PRIMARY KEY (status, callback_status, stripe)
);

INSERT INTO task_status_counts (application_id, user_id, type, status, callback_status, stripe, n)
SELECT application_id, user_id, type, tasks_status(started_ms, finished_ms, success),
    tasks_callback_status(callback_url, finished_ms, delivered_ms, next_attempt_ms), -1, count(*)
FROM tasks GROUP BY 1, 2, 3, 4, 5;

INSERT INTO task_totals (status, callback_status, stripe, n)
SELECT status, callback_status, -1, sum(n) FROM task_status_counts GROUP BY 1, 2
UNION ALL
SELECT '*', '*', -1, count(*) FROM tasks HAVING count(*) > 0;

-- Statement-level triggers read the changed rows from transition tables, so
-- that a bulk insert, a Prune of 1000 tasks or a RedeliverFailed of 500
-- updates each key once. The rows are grouped by key and statuses (an
-- update counts its old rows -1 and its new rows +1, so that rows whose key
-- and statuses did not change, as in a claim or a lease renewal, cancel out)
-- and the changes added to the counters; an update leaves task_counts to
-- tasks_count_update. Keys are locked in sorted order within each table,
-- and the tables always in the order task_counts, task_status_counts,
-- task_totals (a row trigger fires before the statement triggers, and an
-- INSERT runs before the unreferenced INSERT of its WITH clause), so that
-- two statements never deadlock on them. search_path is pinned to this
-- schema so the triggers find their tables whatever the session's
-- search_path is.
CREATE FUNCTION tasks_count_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts AS c (application_id, user_id, type, stripe, n)
    SELECT application_id, user_id, type, pg_backend_pid() % 16, count(*)
    FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (application_id, user_id, type, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    WITH d AS MATERIALIZED (
        SELECT application_id, user_id, type, tasks_status(started_ms, finished_ms, success) AS st,
            tasks_callback_status(callback_url, finished_ms, delivered_ms, next_attempt_ms) AS cb, count(*) AS n
        FROM new_rows GROUP BY 1, 2, 3, 4, 5
    ), totals AS (
        INSERT INTO task_totals AS c (status, callback_status, stripe, n)
        SELECT s.st, s.cb, pg_backend_pid() % 16, sum(d.n)
        FROM d CROSS JOIN LATERAL (VALUES (d.st, d.cb), ('*', '*')) s (st, cb)
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n
    )
    INSERT INTO task_status_counts AS c (application_id, user_id, type, status, callback_status, stripe, n)
    SELECT application_id, user_id, type, st, cb, pg_backend_pid() % 16, n FROM d ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (application_id, user_id, type, status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

CREATE FUNCTION tasks_count_delete() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts AS c (application_id, user_id, type, stripe, n)
    SELECT application_id, user_id, type, pg_backend_pid() % 16, -count(*)
    FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (application_id, user_id, type, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    WITH d AS MATERIALIZED (
        SELECT application_id, user_id, type, tasks_status(started_ms, finished_ms, success) AS st,
            tasks_callback_status(callback_url, finished_ms, delivered_ms, next_attempt_ms) AS cb, -count(*) AS n
        FROM old_rows GROUP BY 1, 2, 3, 4, 5
    ), totals AS (
        INSERT INTO task_totals AS c (status, callback_status, stripe, n)
        SELECT s.st, s.cb, pg_backend_pid() % 16, sum(d.n)
        FROM d CROSS JOIN LATERAL (VALUES (d.st, d.cb), ('*', '*')) s (st, cb)
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n
    )
    INSERT INTO task_status_counts AS c (application_id, user_id, type, status, callback_status, stripe, n)
    SELECT application_id, user_id, type, st, cb, pg_backend_pid() % 16, n FROM d ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (application_id, user_id, type, status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

CREATE FUNCTION tasks_status_count_update() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    WITH d AS MATERIALIZED (
        SELECT application_id, user_id, type, st, cb, sum(n) AS n FROM (
            SELECT application_id, user_id, type, tasks_status(started_ms, finished_ms, success) AS st,
                tasks_callback_status(callback_url, finished_ms, delivered_ms, next_attempt_ms) AS cb, -1 AS n
            FROM old_rows
            UNION ALL
            SELECT application_id, user_id, type, tasks_status(started_ms, finished_ms, success),
                tasks_callback_status(callback_url, finished_ms, delivered_ms, next_attempt_ms), 1
            FROM new_rows
        ) x GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0
    ), totals AS (
        INSERT INTO task_totals AS c (status, callback_status, stripe, n)
        SELECT st, cb, pg_backend_pid() % 16, sum(n) FROM d GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n
    )
    INSERT INTO task_status_counts AS c (application_id, user_id, type, status, callback_status, stripe, n)
    SELECT application_id, user_id, type, st, cb, pg_backend_pid() % 16, n FROM d ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (application_id, user_id, type, status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

CREATE FUNCTION tasks_count_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM task_counts;
    DELETE FROM task_status_counts;
    DELETE FROM task_totals;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_insert();
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_delete();
CREATE TRIGGER tasks_status_count_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_status_count_update();
CREATE TRIGGER tasks_count_truncate AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_truncate();

-- Folds at most max_rows stripe rows of task_counts and of
-- task_status_counts (and every stripe row of task_totals) into stripe -1
-- and drops the keys whose count is then zero; returns the number of stripe
-- rows folded. Rows a writer holds at that moment are skipped (left for the
-- next fold), so a fold never waits for a writer and a writer waits at most
-- for one fold; only one fold runs at a time in a schema (the others return
-- 0 at once). Each table is folded in three steps: the stripe rows are
-- locked and deleted, their sums added to stripe -1, and the keys left at
-- zero deleted.
CREATE FUNCTION tasks_fold_counts(max_rows integer) RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    folded integer := 0;
    cnt integer;
    apps text[]; users text[]; types text[]; sts text[]; cbs text[]; ns bigint[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('github.com/tasksapi/tasks/pgstore/fold:' || current_schema(), 0)) THEN
        RETURN 0;
    END IF;

    WITH l AS MATERIALIZED (
        SELECT application_id, user_id, type, stripe FROM task_counts
        WHERE stripe >= 0 ORDER BY application_id, user_id, type, stripe
        LIMIT max_rows FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM task_counts c USING l
        WHERE c.application_id = l.application_id AND c.user_id = l.user_id AND c.type = l.type AND c.stripe = l.stripe
        RETURNING c.application_id, c.user_id, c.type, c.n
    ), sums AS (
        SELECT application_id, user_id, type, sum(n)::bigint AS n, count(*) AS rows FROM gone GROUP BY 1, 2, 3
    )
    SELECT coalesce(sum(rows), 0), array_agg(application_id), array_agg(user_id), array_agg(type), array_agg(n)
    INTO cnt, apps, users, types, ns FROM sums;
    folded := folded + cnt;
    INSERT INTO task_counts AS c (application_id, user_id, type, stripe, n)
    SELECT a, u, t, -1, n FROM unnest(apps, users, types, ns) AS k (a, u, t, n) ORDER BY 1, 2, 3
    ON CONFLICT (application_id, user_id, type, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    DELETE FROM task_counts c USING unnest(apps, users, types) AS k (a, u, t)
    WHERE c.application_id = k.a AND c.user_id = k.u AND c.type = k.t AND c.stripe = -1 AND c.n = 0;

    WITH l AS MATERIALIZED (
        SELECT application_id, user_id, type, status, callback_status, stripe FROM task_status_counts
        WHERE stripe >= 0 ORDER BY application_id, user_id, type, status, callback_status, stripe
        LIMIT max_rows FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM task_status_counts c USING l
        WHERE c.application_id = l.application_id AND c.user_id = l.user_id AND c.type = l.type
          AND c.status = l.status AND c.callback_status = l.callback_status AND c.stripe = l.stripe
        RETURNING c.application_id, c.user_id, c.type, c.status, c.callback_status, c.n
    ), sums AS (
        SELECT application_id, user_id, type, status, callback_status, sum(n)::bigint AS n, count(*) AS rows
        FROM gone GROUP BY 1, 2, 3, 4, 5
    )
    SELECT coalesce(sum(rows), 0), array_agg(application_id), array_agg(user_id), array_agg(type),
        array_agg(status), array_agg(callback_status), array_agg(n)
    INTO cnt, apps, users, types, sts, cbs, ns FROM sums;
    folded := folded + cnt;
    INSERT INTO task_status_counts AS c (application_id, user_id, type, status, callback_status, stripe, n)
    SELECT a, u, t, s, cb, -1, n FROM unnest(apps, users, types, sts, cbs, ns) AS k (a, u, t, s, cb, n)
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (application_id, user_id, type, status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    DELETE FROM task_status_counts c USING unnest(apps, users, types, sts, cbs) AS k (a, u, t, s, cb)
    WHERE c.application_id = k.a AND c.user_id = k.u AND c.type = k.t AND c.status = k.s
      AND c.callback_status = k.cb AND c.stripe = -1 AND c.n = 0;

    WITH l AS MATERIALIZED (
        SELECT status, callback_status, stripe FROM task_totals
        WHERE stripe >= 0 ORDER BY status, callback_status, stripe FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM task_totals c USING l
        WHERE c.status = l.status AND c.callback_status = l.callback_status AND c.stripe = l.stripe
        RETURNING c.status, c.callback_status, c.n
    )
    INSERT INTO task_totals AS c (status, callback_status, stripe, n)
    SELECT status, callback_status, -1, sum(n) FROM gone GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (status, callback_status, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    DELETE FROM task_totals WHERE stripe = -1 AND n = 0;

    RETURN folded;
END
$$;

-- Statistics for the new column and indexes, so that the first queries
-- after the upgrade are planned with them.
ANALYZE tasks;
