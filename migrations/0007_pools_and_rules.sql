-- 0007_pools_and_rules: pools as objects and per-team rules (SPEC §9).
--
-- Both are part of the mapping: every change is a version, written by the
-- write transaction that makes it, and loaded with every snapshot. `spec`
-- is the serialized bucketmap.v1.Pool / bucketmap.v1.TeamRule,
-- authoritative; the other columns are what SQL filters on.
--
-- pools: one row per pool that has an object (its state or priority was
-- set with UpdatePool). A pool without a row is ACTIVE with the default
-- priority. Rows are never deleted.
--
-- team_rules: at most one rule per (team, kind). Cleared and expired rules
-- are deleted (the change log keeps their history).
--
-- Expand-only: adds tables. Never edit this file after it has shipped.
CREATE TABLE pools (
  name text PRIMARY KEY,
  state smallint NOT NULL,  -- bucketmap.v1.BucketState: ACTIVE or PAUSED
  priority integer NOT NULL,
  spec bytea NOT NULL,
  updated_version bigint NOT NULL
);

CREATE TABLE team_rules (
  team_id bigint NOT NULL CHECK (team_id >= 1),
  kind smallint NOT NULL,  -- bucketmap.v1.TeamRuleKind
  expire_time timestamptz,  -- NULL: never
  spec bytea NOT NULL,
  version bigint NOT NULL,
  PRIMARY KEY (team_id, kind)
);
