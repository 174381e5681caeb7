-- Schema version 5: the recorder that owns each task, so that several
-- callback recorders (callback.Options.Name) share one database and each
-- claims, sweeps and recovers only its own tasks.
--
-- recorder is the name of the recorder that created the task ('' for the
-- default recorder, which every task written before this version belongs
-- to). ADD COLUMN with a constant default rewrites no row (PostgreSQL 11
-- and later keep the default in the catalog). No Store method changes it,
-- so it never keeps an update from being HOT.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS recorder text COLLATE "C" NOT NULL DEFAULT '';

-- The callback outbox and the failed callbacks by finish time lead with the
-- recorder: a claim and RedeliverFailed read one range of them (recorder =
-- $, then due or finish time). Abandoned reads tasks_unfinished (a small
-- set) and filters on the recorder, as it filters on the lease. Find's
-- status conditions do not name the recorder; they still match the
-- predicates of these partial indexes.
DROP INDEX IF EXISTS tasks_outbox;
CREATE INDEX IF NOT EXISTS tasks_outbox ON tasks (recorder, next_attempt_ms, id)
    WHERE callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms <> 0;

DROP INDEX IF EXISTS tasks_callback_failed_finished;
CREATE INDEX IF NOT EXISTS tasks_callback_failed_finished ON tasks (recorder, finished_ms, id)
    WHERE callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms = 0;
