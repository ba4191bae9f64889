-- 0008_rebalance: automatic rebalancing's churn budget (issue 12,
-- docs/rebalancing.md). The leader adds the share of a pool's load each
-- automatic round moved to the pool's row of that UTC day, and spends no
-- more than --auto_rebalance_daily_load_share a day: kept here, a leader
-- change does not reset it. Days are counted since 1970-01-01 (UTC).
--
-- Expand-only: adds a table. Never edit this file after it has shipped.
CREATE TABLE rebalance_churn (
  pool text NOT NULL,
  day integer NOT NULL,
  share_moved double precision NOT NULL,
  PRIMARY KEY (pool, day)
);
