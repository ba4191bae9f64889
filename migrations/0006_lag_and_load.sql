-- 0006_lag_and_load: the signals of SPEC §9 (issue 11), shared by every
-- replica through the database, as client states are.
--
-- bucket_lag: the leader's lag exporter (server/signals/lag_exporter.h)
-- replaces the whole set every --lag_interval, so a follower's GetLoad
-- shows the same readings with their age. A row with up = false carries
-- no lag (messages and seconds are NULL): unknown is never zero.
--
-- load_slots, load_rates, load_meta: the load clients report on their
-- watch streams (domain/load.h). Each replica adds its windows' rates into
-- load_slots; a window once due is folded, under the load_meta row lock,
-- into load_rates, an exponentially weighted average per team (kind 0),
-- per bucket for teams a client did not list (kind 1) and unattributed
-- (kind 2), stored as of `slot` and decayed when read.
--
-- Expand-only: adds tables. Never edit this file after it has shipped.
CREATE TABLE bucket_lag (
  bucket_id integer NOT NULL,
  role text NOT NULL,
  consumer_group text NOT NULL,
  up boolean NOT NULL,
  messages bigint,
  seconds double precision,
  error text NOT NULL DEFAULT '',
  read_at timestamptz NOT NULL,
  PRIMARY KEY (bucket_id, role),
  CHECK (up = (messages IS NOT NULL) AND up = (seconds IS NOT NULL))
);

CREATE TABLE load_slots (
  slot bigint NOT NULL,     -- floor(unix ms / window_ms)
  kind smallint NOT NULL,   -- 0 team, 1 bucket (unlisted teams), 2 unattributed
  id bigint NOT NULL,
  events double precision NOT NULL,      -- events per second
  processing double precision NOT NULL,  -- processing seconds per second
  PRIMARY KEY (slot, kind, id)
);

CREATE TABLE load_rates (
  kind smallint NOT NULL,
  id bigint NOT NULL,
  events double precision NOT NULL,
  processing double precision NOT NULL,
  slot bigint NOT NULL,     -- the values are as of the end of this slot
  PRIMARY KEY (kind, id)
);

CREATE TABLE load_meta (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),  -- exactly one row
  window_ms bigint NOT NULL DEFAULT 10000,
  half_life_ms bigint NOT NULL DEFAULT 600000,
  first_slot bigint,       -- the first window folded; NULL: none yet
  folded_through bigint    -- the last window folded
);
INSERT INTO load_meta (id) VALUES (true);
