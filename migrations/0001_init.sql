-- 0001_init: the mapping, its version counter and the change log.
--
-- Applied once by server/migrator.cc, inside one transaction, and recorded
-- in schema_migrations with its checksum. Never edit this file after it
-- has shipped: add a new NNNN_name.sql instead (expand, then contract).

-- The global version counter and cluster identity: exactly one row.
-- Every write locks this row (SELECT ... FOR UPDATE) and increments
-- `version` inside its own transaction, so versions are gapless and become
-- visible in commit order. A sequence would commit out of order and leave
-- gaps on rollback.
CREATE TABLE bm_meta (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  version bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
  -- Random, generated once: clients that see another cluster_id (a
  -- restored or replaced database) drop their state.
  cluster_id text NOT NULL DEFAULT gen_random_uuid()::text,
  next_bucket_id integer NOT NULL DEFAULT 1 CHECK (next_bucket_id >= 1),
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO bm_meta DEFAULT VALUES;

-- Buckets are never deleted (RETIRED is kept forever), so ids and names are
-- never reused. `spec` is the bucket's bucketmap.v1.Bucket JSON; the other
-- columns copy the fields SQL queries filter on.
CREATE TABLE buckets (
  id integer PRIMARY KEY CHECK (id >= 1),
  name text NOT NULL UNIQUE,
  state smallint NOT NULL CHECK (state BETWEEN 1 AND 4),
  weight integer NOT NULL,
  pool text NOT NULL,
  spec jsonb NOT NULL,
  created_version bigint NOT NULL,
  updated_version bigint NOT NULL
);

-- Overrides: a team is pinned to a bucket or assigned to a pool. Teams
-- without a row are in the default pool.
--
-- Only the primary key is indexed: the server answers queries by bucket or
-- pool from its in-memory snapshot, and each index costs ~40% more time in a
-- 100,000-team BulkAssign. For the same reason there is no foreign key to
-- buckets (its per-row RI trigger would dominate): buckets are never
-- deleted, and the planner checks every pin.
CREATE TABLE assignments (
  team_id bigint PRIMARY KEY CHECK (team_id >= 1),
  bucket_id integer CHECK (bucket_id >= 1),
  pool text CHECK (pool <> ''),
  -- The version that last set this override.
  version bigint NOT NULL,
  CHECK ((bucket_id IS NULL) <> (pool IS NULL))
);

-- One row per version: who, why, when, and the delta (a serialized
-- bucketmap.v1.MappingDelta). Serves audit history and watch resumes.
CREATE TABLE change_log (
  version bigint PRIMARY KEY CHECK (version >= 1),
  kind text NOT NULL,
  actor text NOT NULL,
  reason text NOT NULL,
  request_id text,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  assignments_changed bigint NOT NULL,
  bucket_ids integer[] NOT NULL,
  delta bytea NOT NULL
);
CREATE INDEX change_log_created_at_idx ON change_log (created_at);

-- The teams each version set or unset, for history by team. No foreign key
-- and no index on version alone (bulk cost, as above): Prune, which runs
-- rarely, deletes by version with a sequential scan.
CREATE TABLE change_log_teams (
  team_id bigint NOT NULL,
  version bigint NOT NULL,
  PRIMARY KEY (team_id, version)
);

-- Idempotency: the first successful result of each request_id. Failed
-- attempts are never stored (their transaction rolls back).
CREATE TABLE request_ids (
  request_id text PRIMARY KEY,
  -- Digest of the request body without request_id; a replay must match.
  fingerprint bytea NOT NULL,
  -- The serialized response returned to the first caller.
  response bytea NOT NULL,
  version bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX request_ids_created_at_idx ON request_ids (created_at);
