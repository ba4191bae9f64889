-- 0005_handoffs: coordinated moves (SPEC §5) and the move cooldowns.
--
-- A handoff row is inserted by the write that opens it and updated by
-- every phase change, each one a version of its own (change_log keeps the
-- history; this table keeps the current state). `spec` is the serialized
-- bucketmap.v1.Handoff, authoritative; the other columns are what SQL
-- filters on. `leader_epoch` is the epoch of the coordinator that made the
-- last change (0 for admin writes: opening, cancelling).
--
-- team_moves / pool_moves: when a team (listed in a handoff) or a pool's
-- placement last moved, for --move_cooldown.
--
-- Expand-only: adds tables. Never edit this file after it has shipped.
CREATE TABLE handoffs (
  id bigint PRIMARY KEY,
  opened_version bigint NOT NULL,
  source_bucket_id integer NOT NULL,
  state smallint NOT NULL,  -- bucketmap.v1.HandoffPhase
  phase_version bigint NOT NULL,
  leader_epoch bigint NOT NULL DEFAULT 0,
  team_ids bigint[] NOT NULL DEFAULT '{}',
  spec bytea NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- The open set is loaded with every snapshot; keep that scan small.
CREATE INDEX handoffs_open_idx ON handoffs (id) WHERE state IN (1, 2);

CREATE TABLE team_moves (
  team_id bigint PRIMARY KEY,
  moved_at timestamptz NOT NULL,
  version bigint NOT NULL
);

CREATE TABLE pool_moves (
  pool text PRIMARY KEY,
  moved_at timestamptz NOT NULL,
  version bigint NOT NULL
);
