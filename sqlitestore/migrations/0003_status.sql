-- Schema version 3: the task status and the callback status, as a filter
-- and as counts, and the in-flight marker of a claimed delivery.
--
-- Three 0/1 columns are added. ALTER TABLE ADD COLUMN appends them after
-- request and response, but SQLite stores the integers 0 and 1 in the
-- record header alone (serial types 8 and 9, no content bytes), so reading
-- one never follows a large row's overflow chain and flipping one never
-- changes the row's size (SQLite then rewrites only the changed page, not
-- the overflow pages). A row written before this version has no such
-- columns and reads their default, 0, without being rewritten.
--
--   failed   1 when the task finished with a response that is not a
--            success (taskstore.Succeeded, computed in Go by Create and
--            Finish); 0 otherwise, unfinished tasks included.
--   gave_up  1 when the task's callback was given up: finished, a callback
--            URL, not delivered and no attempt scheduled (delivered_ms = 0
--            AND next_attempt_ms = 0). RecordAttempt sets it when it gives
--            up, Redeliver clears it. It stands for next_attempt_ms = 0 in
--            the status so that claims, which move next_attempt_ms of
--            pending deliveries only, never touch the status, its index or
--            the counters.
--   claimed  1 from ClaimDeliveries until RecordAttempt or Redeliver: the
--            delivery is in flight while next_attempt_ms (the claim's
--            expiry) is later than the time Redeliver is given.
ALTER TABLE tasks ADD COLUMN failed  INTEGER NOT NULL DEFAULT 0 CHECK (failed IN (0, 1));
ALTER TABLE tasks ADD COLUMN gave_up INTEGER NOT NULL DEFAULT 0 CHECK (gave_up IN (0, 1));
ALTER TABLE tasks ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0 CHECK (claimed IN (0, 1));

-- Existing finished tasks get their success bit from their stored response,
-- read by taskstore.Succeeded itself (registered by the package as an SQL
-- function), so that old and new rows agree byte for byte.
UPDATE tasks SET failed = 1 WHERE finished_ms <> 0 AND NOT sqlitestore_succeeded(response);
UPDATE tasks SET gave_up = 1
WHERE callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms = 0;

-- state: the task status (tens) and callback status (units), computed on
-- read from small columns, never stored in the row:
--
--   tens   0 pending, 1 running, 2 succeeded, 3 failed
--   units  0 no callback, 1 waiting, 2 pending, 3 delivered, 4 failed
--
-- The twelve values that occur: 0, 1, 10, 11 (unfinished), 20, 22, 23, 24,
-- 30, 32, 33, 34 (finished). 22 and 32 (callback pending) and the
-- unfinished ones are transient; the other six are where tasks end up.
ALTER TABLE tasks ADD COLUMN state INTEGER GENERATED ALWAYS AS (
    CASE WHEN finished_ms = 0
    THEN CASE WHEN started_ms = 0 THEN 0 ELSE 10 END + (callback_url <> '')
    ELSE 20 + 10 * failed + CASE WHEN callback_url = '' THEN 0 WHEN delivered_ms <> 0 THEN 3
        WHEN gave_up THEN 4 ELSE 2 END
    END) VIRTUAL;

-- Finished tasks in a final state, newest first within each state: the
-- pages of the status filters (and RedeliverFailed's failed callbacks).
-- Transient states are not in it, so creating, starting, claiming and
-- retrying never write it; each task enters it once (when it finishes
-- without a callback, or its callback is delivered or given up). Tasks in a
-- transient state are found through the partial indexes that hold exactly
-- them: tasks_lease (unfinished) and tasks_outbox (callback pending).
-- It carries the application, user and type, so that a status filter with
-- them skips the tasks of other keys without reading their rows. Its
-- condition (the states 20, 23, 24, 30, 33 and 34) is written with
-- comparisons: SQLite evaluates it on every write that may change the
-- state, and an IN list of more than two values would build a temporary
-- table each time.
CREATE INDEX tasks_done ON tasks (state, created_ms, id, application_id, user_id, type)
    WHERE state >= 20 AND state % 10 <> 2;

-- task_counts gains one counter per state: for each (application, user,
-- type), n is the number of tasks and sXY the number in state XY, so a
-- total that adds a status or callback status is a sum of columns of the
-- same rows. Rebuilt from the tasks.
DROP TRIGGER tasks_count_insert;
DROP TRIGGER tasks_count_delete;
DROP TRIGGER tasks_count_update;
DROP TABLE task_counts;

CREATE TABLE task_counts (
    application_id TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    n              INTEGER NOT NULL,
    s00 INTEGER NOT NULL DEFAULT 0, s01 INTEGER NOT NULL DEFAULT 0,
    s10 INTEGER NOT NULL DEFAULT 0, s11 INTEGER NOT NULL DEFAULT 0,
    s20 INTEGER NOT NULL DEFAULT 0, s22 INTEGER NOT NULL DEFAULT 0,
    s23 INTEGER NOT NULL DEFAULT 0, s24 INTEGER NOT NULL DEFAULT 0,
    s30 INTEGER NOT NULL DEFAULT 0, s32 INTEGER NOT NULL DEFAULT 0,
    s33 INTEGER NOT NULL DEFAULT 0, s34 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (application_id, user_id, type)
) STRICT, WITHOUT ROWID;

CREATE INDEX task_counts_user ON task_counts (user_id, type);
CREATE INDEX task_counts_type ON task_counts (type);

INSERT INTO task_counts (application_id, user_id, type, n,
    s00, s01, s10, s11, s20, s22, s23, s24, s30, s32, s33, s34)
SELECT application_id, user_id, type, count(*),
    sum(state = 0), sum(state = 1), sum(state = 10), sum(state = 11),
    sum(state = 20), sum(state = 22), sum(state = 23), sum(state = 24),
    sum(state = 30), sum(state = 32), sum(state = 33), sum(state = 34)
FROM tasks GROUP BY application_id, user_id, type;

-- task_totals is the same counters for all tasks, in one row: the totals
-- of the filters without a key (the empty filter, a status alone), read in
-- one row instead of adding up task_counts. The same triggers keep it, in
-- the same statements' arithmetic.
CREATE TABLE task_totals (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    n   INTEGER NOT NULL,
    s00 INTEGER NOT NULL, s01 INTEGER NOT NULL, s10 INTEGER NOT NULL, s11 INTEGER NOT NULL,
    s20 INTEGER NOT NULL, s22 INTEGER NOT NULL, s23 INTEGER NOT NULL, s24 INTEGER NOT NULL,
    s30 INTEGER NOT NULL, s32 INTEGER NOT NULL, s33 INTEGER NOT NULL, s34 INTEGER NOT NULL
) STRICT;

INSERT INTO task_totals (one, n, s00, s01, s10, s11, s20, s22, s23, s24, s30, s32, s33, s34)
SELECT 1, coalesce(sum(n), 0), coalesce(sum(s00), 0), coalesce(sum(s01), 0), coalesce(sum(s10), 0),
    coalesce(sum(s11), 0), coalesce(sum(s20), 0), coalesce(sum(s22), 0), coalesce(sum(s23), 0),
    coalesce(sum(s24), 0), coalesce(sum(s30), 0), coalesce(sum(s32), 0), coalesce(sum(s33), 0),
    coalesce(sum(s34), 0)
FROM task_counts;

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (application_id, user_id, type, n,
        s00, s01, s10, s11, s20, s22, s23, s24, s30, s32, s33, s34)
    VALUES (NEW.application_id, NEW.user_id, NEW.type, 1,
        NEW.state = 0, NEW.state = 1, NEW.state = 10, NEW.state = 11,
        NEW.state = 20, NEW.state = 22, NEW.state = 23, NEW.state = 24,
        NEW.state = 30, NEW.state = 32, NEW.state = 33, NEW.state = 34)
    ON CONFLICT (application_id, user_id, type) DO UPDATE SET n = n + 1,
        s00 = s00 + excluded.s00, s01 = s01 + excluded.s01,
        s10 = s10 + excluded.s10, s11 = s11 + excluded.s11,
        s20 = s20 + excluded.s20, s22 = s22 + excluded.s22,
        s23 = s23 + excluded.s23, s24 = s24 + excluded.s24,
        s30 = s30 + excluded.s30, s32 = s32 + excluded.s32,
        s33 = s33 + excluded.s33, s34 = s34 + excluded.s34;
    UPDATE task_totals SET n = n + 1,
        s00 = s00 + (NEW.state = 0), s01 = s01 + (NEW.state = 1),
        s10 = s10 + (NEW.state = 10), s11 = s11 + (NEW.state = 11),
        s20 = s20 + (NEW.state = 20), s22 = s22 + (NEW.state = 22),
        s23 = s23 + (NEW.state = 23), s24 = s24 + (NEW.state = 24),
        s30 = s30 + (NEW.state = 30), s32 = s32 + (NEW.state = 32),
        s33 = s33 + (NEW.state = 33), s34 = s34 + (NEW.state = 34);
END;

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts SET n = n - 1,
        s00 = s00 - (OLD.state = 0), s01 = s01 - (OLD.state = 1),
        s10 = s10 - (OLD.state = 10), s11 = s11 - (OLD.state = 11),
        s20 = s20 - (OLD.state = 20), s22 = s22 - (OLD.state = 22),
        s23 = s23 - (OLD.state = 23), s24 = s24 - (OLD.state = 24),
        s30 = s30 - (OLD.state = 30), s32 = s32 - (OLD.state = 32),
        s33 = s33 - (OLD.state = 33), s34 = s34 - (OLD.state = 34)
    WHERE application_id = OLD.application_id AND user_id = OLD.user_id AND type = OLD.type;
    DELETE FROM task_counts
    WHERE application_id = OLD.application_id AND user_id = OLD.user_id AND type = OLD.type AND n <= 0;
    UPDATE task_totals SET n = n - 1,
        s00 = s00 - (OLD.state = 0), s01 = s01 - (OLD.state = 1),
        s10 = s10 - (OLD.state = 10), s11 = s11 - (OLD.state = 11),
        s20 = s20 - (OLD.state = 20), s22 = s22 - (OLD.state = 22),
        s23 = s23 - (OLD.state = 23), s24 = s24 - (OLD.state = 24),
        s30 = s30 - (OLD.state = 30), s32 = s32 - (OLD.state = 32),
        s33 = s33 - (OLD.state = 33), s34 = s34 - (OLD.state = 34);
END;

-- A state change moves one task from one counter to another, in its row of
-- task_counts and in task_totals. It fires only for the columns the state
-- is computed from; a claim or a retry (next_attempt_ms, claimed,
-- attempts…) does not fire it.
CREATE TRIGGER tasks_count_state
AFTER UPDATE OF started_ms, finished_ms, failed, callback_url, delivered_ms, gave_up ON tasks
WHEN OLD.state IS NOT NEW.state
    AND OLD.application_id IS NEW.application_id AND OLD.user_id IS NEW.user_id AND OLD.type IS NEW.type
BEGIN
    UPDATE task_counts SET
        s00 = s00 - (OLD.state = 0) + (NEW.state = 0), s01 = s01 - (OLD.state = 1) + (NEW.state = 1),
        s10 = s10 - (OLD.state = 10) + (NEW.state = 10), s11 = s11 - (OLD.state = 11) + (NEW.state = 11),
        s20 = s20 - (OLD.state = 20) + (NEW.state = 20), s22 = s22 - (OLD.state = 22) + (NEW.state = 22),
        s23 = s23 - (OLD.state = 23) + (NEW.state = 23), s24 = s24 - (OLD.state = 24) + (NEW.state = 24),
        s30 = s30 - (OLD.state = 30) + (NEW.state = 30), s32 = s32 - (OLD.state = 32) + (NEW.state = 32),
        s33 = s33 - (OLD.state = 33) + (NEW.state = 33), s34 = s34 - (OLD.state = 34) + (NEW.state = 34)
    WHERE application_id = NEW.application_id AND user_id = NEW.user_id AND type = NEW.type;
    UPDATE task_totals SET
        s00 = s00 - (OLD.state = 0) + (NEW.state = 0), s01 = s01 - (OLD.state = 1) + (NEW.state = 1),
        s10 = s10 - (OLD.state = 10) + (NEW.state = 10), s11 = s11 - (OLD.state = 11) + (NEW.state = 11),
        s20 = s20 - (OLD.state = 20) + (NEW.state = 20), s22 = s22 - (OLD.state = 22) + (NEW.state = 22),
        s23 = s23 - (OLD.state = 23) + (NEW.state = 23), s24 = s24 - (OLD.state = 24) + (NEW.state = 24),
        s30 = s30 - (OLD.state = 30) + (NEW.state = 30), s32 = s32 - (OLD.state = 32) + (NEW.state = 32),
        s33 = s33 - (OLD.state = 33) + (NEW.state = 33), s34 = s34 - (OLD.state = 34) + (NEW.state = 34);
END;

-- No Store method changes application_id, user_id or type; the trigger keeps
-- the counts right for anyone who edits the table by hand (and moves the
-- state in task_totals, should the same UPDATE change it).
CREATE TRIGGER tasks_count_update AFTER UPDATE OF application_id, user_id, type ON tasks
WHEN OLD.application_id IS NOT NEW.application_id OR OLD.user_id IS NOT NEW.user_id OR OLD.type IS NOT NEW.type
BEGIN
    UPDATE task_counts SET n = n - 1,
        s00 = s00 - (OLD.state = 0), s01 = s01 - (OLD.state = 1),
        s10 = s10 - (OLD.state = 10), s11 = s11 - (OLD.state = 11),
        s20 = s20 - (OLD.state = 20), s22 = s22 - (OLD.state = 22),
        s23 = s23 - (OLD.state = 23), s24 = s24 - (OLD.state = 24),
        s30 = s30 - (OLD.state = 30), s32 = s32 - (OLD.state = 32),
        s33 = s33 - (OLD.state = 33), s34 = s34 - (OLD.state = 34)
    WHERE application_id = OLD.application_id AND user_id = OLD.user_id AND type = OLD.type;
    DELETE FROM task_counts
    WHERE application_id = OLD.application_id AND user_id = OLD.user_id AND type = OLD.type AND n <= 0;
    INSERT INTO task_counts (application_id, user_id, type, n,
        s00, s01, s10, s11, s20, s22, s23, s24, s30, s32, s33, s34)
    VALUES (NEW.application_id, NEW.user_id, NEW.type, 1,
        NEW.state = 0, NEW.state = 1, NEW.state = 10, NEW.state = 11,
        NEW.state = 20, NEW.state = 22, NEW.state = 23, NEW.state = 24,
        NEW.state = 30, NEW.state = 32, NEW.state = 33, NEW.state = 34)
    ON CONFLICT (application_id, user_id, type) DO UPDATE SET n = n + 1,
        s00 = s00 + excluded.s00, s01 = s01 + excluded.s01,
        s10 = s10 + excluded.s10, s11 = s11 + excluded.s11,
        s20 = s20 + excluded.s20, s22 = s22 + excluded.s22,
        s23 = s23 + excluded.s23, s24 = s24 + excluded.s24,
        s30 = s30 + excluded.s30, s32 = s32 + excluded.s32,
        s33 = s33 + excluded.s33, s34 = s34 + excluded.s34;
    UPDATE task_totals SET
        s00 = s00 - (OLD.state = 0) + (NEW.state = 0), s01 = s01 - (OLD.state = 1) + (NEW.state = 1),
        s10 = s10 - (OLD.state = 10) + (NEW.state = 10), s11 = s11 - (OLD.state = 11) + (NEW.state = 11),
        s20 = s20 - (OLD.state = 20) + (NEW.state = 20), s22 = s22 - (OLD.state = 22) + (NEW.state = 22),
        s23 = s23 - (OLD.state = 23) + (NEW.state = 23), s24 = s24 - (OLD.state = 24) + (NEW.state = 24),
        s30 = s30 - (OLD.state = 30) + (NEW.state = 30), s32 = s32 - (OLD.state = 32) + (NEW.state = 32),
        s33 = s33 - (OLD.state = 33) + (NEW.state = 33), s34 = s34 - (OLD.state = 34) + (NEW.state = 34);
END;
