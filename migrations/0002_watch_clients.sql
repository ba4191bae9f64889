-- 0002_watch_clients: the state of watch clients, for ListClients and the
-- handoff barrier (SPEC §3, "Applied versions").
--
-- Expand-only: adds a table, changes nothing 0001 created. Never edit this
-- file after it has shipped.

-- One row per client_id, upserted in batches by the replica serving the
-- client (PgStore::SaveClients), each time with a new lease. A row whose
-- lease has passed is a client no replica has vouched for lately: readers
-- skip it. Times are NULL when the event never happened.
--
-- No index on lease_expires: every save moves it, so an index would turn
-- each upsert into new index entries in both indexes instead of a HOT
-- update, while ListClients reads nearly every row anyway. The fillfactor
-- leaves room on each page for those HOT updates (about one per client per
-- second with many clients).
CREATE TABLE watch_clients (
  client_id text PRIMARY KEY,
  role smallint NOT NULL,  -- bucketmap.v1.ClientRole
  replica text NOT NULL,
  peer text NOT NULL,
  applied_version bigint NOT NULL,
  drained_version bigint NOT NULL,
  connected_at timestamptz,
  last_ack timestamptz,
  last_nack timestamptz,
  last_nack_error text NOT NULL,
  nacks bigint NOT NULL,
  connected boolean NOT NULL,
  lease_expires timestamptz NOT NULL
) WITH (fillfactor = 70);
