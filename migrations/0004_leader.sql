-- 0004_leader: the leader epoch, the fencing token of the one replica that
-- runs the outbox relay and the handoff coordinator (SPEC §5.8, §7).
--
-- Leadership itself is a session-level advisory lock (server/leader.h):
-- PostgreSQL releases it when the holder's session ends, so a dead leader
-- cannot keep it. This row only numbers the leaderships. A replica that
-- takes the lock bumps `epoch` in the lock's session; fenced writes read
-- the row FOR SHARE inside their transaction and commit only while it
-- still carries their epoch, so the bump waits for the old leader's
-- in-flight writes and every later one of them is refused.
--
-- Expand-only: adds a table. Never edit this file after it has shipped.
CREATE TABLE bm_leader (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),  -- exactly one row
  epoch bigint NOT NULL DEFAULT 0,
  holder text NOT NULL DEFAULT '',  -- the replica name of the last leader
  acquired_at timestamptz
);
INSERT INTO bm_leader (id) VALUES (true);
