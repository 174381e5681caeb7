-- Schema version 4: the recorder that owns each task, so that several
-- callback recorders (callback.Options.Name) share one database and each
-- claims, sweeps and recovers only its own tasks.
--
-- recorder is the name of the recorder that created the task ('' for the
-- default recorder, which every task written before this version belongs
-- to: ALTER TABLE ADD COLUMN gives old rows the default without rewriting
-- them). It is appended after request and response; the queries that
-- select by it (ClaimDeliveries, Abandoned, RedeliverFailed) read it from
-- the indexes below, never from a row.
ALTER TABLE tasks ADD COLUMN recorder TEXT NOT NULL DEFAULT '';

-- The callback outbox and the run leases lead with the recorder: a claim
-- and a sweep read one range of them (recorder = ?, then due time or
-- lease), whatever the other recorders hold. Find's status legs scan them
-- whole, as before.
DROP INDEX tasks_outbox;
CREATE INDEX tasks_outbox ON tasks (recorder, next_attempt_ms, id)
    WHERE callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms <> 0;

DROP INDEX tasks_lease;
CREATE INDEX tasks_lease ON tasks (recorder, lease_ms, id) WHERE finished_ms = 0;

-- Failed callbacks (states 24 and 34) by recorder and finish time, for
-- RedeliverFailed: one range per call.
CREATE INDEX tasks_failed ON tasks (recorder, finished_ms, id) WHERE state IN (24, 34);
