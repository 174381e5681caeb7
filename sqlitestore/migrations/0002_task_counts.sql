-- Schema version 2: per-(application, user, type) task counts kept by
-- triggers, so that Find answers the total of a filter made only of
-- application_id, user_id and types without a pass over every match.
CREATE TABLE task_counts (
    application_id TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    n              INTEGER NOT NULL,
    PRIMARY KEY (application_id, user_id, type)
) STRICT, WITHOUT ROWID;

CREATE INDEX task_counts_user ON task_counts (user_id, type);
CREATE INDEX task_counts_type ON task_counts (type);

INSERT INTO task_counts (application_id, user_id, type, n)
SELECT application_id, user_id, type, count(*) FROM tasks
GROUP BY application_id, user_id, type;

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (application_id, user_id, type, n)
    VALUES (NEW.application_id, NEW.user_id, NEW.type, 1)
    ON CONFLICT (application_id, user_id, type) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts SET n = n - 1
    WHERE application_id = OLD.application_id AND user_id = OLD.user_id AND type = OLD.type;
    DELETE FROM task_counts
    WHERE application_id = OLD.application_id AND user_id = OLD.user_id AND type = OLD.type AND n <= 0;
END;

-- No Store method changes these columns; the trigger keeps the counts right
-- for anyone who edits the table by hand.
CREATE TRIGGER tasks_count_update AFTER UPDATE OF application_id, user_id, type ON tasks
WHEN OLD.application_id IS NOT NEW.application_id OR OLD.user_id IS NOT NEW.user_id OR OLD.type IS NOT NEW.type
BEGIN
    UPDATE task_counts SET n = n - 1
    WHERE application_id = OLD.application_id AND user_id = OLD.user_id AND type = OLD.type;
    DELETE FROM task_counts
    WHERE application_id = OLD.application_id AND user_id = OLD.user_id AND type = OLD.type AND n <= 0;
    INSERT INTO task_counts (application_id, user_id, type, n)
    VALUES (NEW.application_id, NEW.user_id, NEW.type, 1)
    ON CONFLICT (application_id, user_id, type) DO UPDATE SET n = n + 1;
END;
