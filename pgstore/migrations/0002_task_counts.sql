-- Schema version 2: task counts per (application, user, type), kept by
-- triggers, so that Find answers the total of a filter made only of
-- application_id, user_id and types by summing a few rows instead of a pass
-- over every matching task.
--
-- Each key has up to 16 "stripes": a statement adds to the stripe of its
-- server process (pg_backend_pid() % 16), so concurrent creates for one key
-- (one busy application) lock different rows instead of queueing on one hot
-- row until each commit. A key's count is the sum of its stripes; one stripe
-- may be negative (a delete on another connection than the insert).
CREATE TABLE task_counts (
    application_id text     COLLATE "C" NOT NULL,
    user_id        text     COLLATE "C" NOT NULL,
    type           text     COLLATE "C" NOT NULL,
    stripe         smallint NOT NULL,
    n              bigint   NOT NULL,
    PRIMARY KEY (application_id, user_id, type, stripe)
);
CREATE INDEX task_counts_user ON task_counts (user_id, type);
CREATE INDEX task_counts_type ON task_counts (type);

INSERT INTO task_counts (application_id, user_id, type, stripe, n)
SELECT application_id, user_id, type, 0, count(*) FROM tasks
GROUP BY application_id, user_id, type;

-- Statement-level triggers read the changed rows from transition tables, so
-- a bulk insert or a Prune of 1000 tasks updates each key once. Keys are
-- locked in sorted order so that two statements never deadlock on them.
-- search_path is pinned to this schema so the trigger finds task_counts
-- whatever the session's search_path is.
CREATE FUNCTION tasks_count_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts AS c (application_id, user_id, type, stripe, n)
    SELECT application_id, user_id, type, pg_backend_pid() % 16, count(*)
    FROM new_rows
    GROUP BY application_id, user_id, type
    ORDER BY application_id, user_id, type
    ON CONFLICT (application_id, user_id, type, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

CREATE FUNCTION tasks_count_delete() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts AS c (application_id, user_id, type, stripe, n)
    SELECT application_id, user_id, type, pg_backend_pid() % 16, -count(*)
    FROM old_rows
    GROUP BY application_id, user_id, type
    ORDER BY application_id, user_id, type
    ON CONFLICT (application_id, user_id, type, stripe) DO UPDATE SET n = c.n + EXCLUDED.n;
    -- Drop the stripes this statement brought to zero, so that keys whose
    -- tasks were all pruned do not pile up.
    DELETE FROM task_counts c
    USING (SELECT DISTINCT application_id, user_id, type FROM old_rows) o
    WHERE c.application_id = o.application_id AND c.user_id = o.user_id AND c.type = o.type
      AND c.stripe = pg_backend_pid() % 16 AND c.n = 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_insert();

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_delete();

-- No Store method changes these columns; this keeps the counts right for
-- anyone who edits the table by hand. (Transition tables cannot be combined
-- with a column list, so this one is a row trigger.)
CREATE FUNCTION tasks_count_update() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO task_counts AS c (application_id, user_id, type, stripe, n)
    VALUES (OLD.application_id, OLD.user_id, OLD.type, pg_backend_pid() % 16, -1)
    ON CONFLICT (application_id, user_id, type, stripe) DO UPDATE SET n = c.n - 1;
    INSERT INTO task_counts AS c (application_id, user_id, type, stripe, n)
    VALUES (NEW.application_id, NEW.user_id, NEW.type, pg_backend_pid() % 16, 1)
    ON CONFLICT (application_id, user_id, type, stripe) DO UPDATE SET n = c.n + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_count_update AFTER UPDATE OF application_id, user_id, type ON tasks
    FOR EACH ROW
    WHEN (OLD.application_id IS DISTINCT FROM NEW.application_id
       OR OLD.user_id IS DISTINCT FROM NEW.user_id
       OR OLD.type IS DISTINCT FROM NEW.type)
    EXECUTE FUNCTION tasks_count_update();

-- TRUNCATE tasks empties the counts too.
CREATE FUNCTION tasks_count_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM task_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_count_truncate AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_truncate();
