-- 0003_outbox: the change log doubles as the transactional outbox of
-- change events (SPEC §4).
--
-- Every version already inserts its change_log row in the transaction
-- that creates it, so that row is the outbox entry: the relay publishes
-- rows in version order and sets published_at once Kafka has acknowledged
-- them. Rows with published_at NULL are never pruned.
--
-- Expand-only: adds a nullable column and an index. Never edit this file
-- after it has shipped.

-- NULL: not yet published. Rows that existed before this migration are
-- left NULL too, so an upgraded database publishes its whole kept history
-- once (consumers drop versions they already have).
ALTER TABLE change_log ADD COLUMN published_at timestamptz;

-- The relay's scan and the backlog metric read only unpublished rows; the
-- partial index stays as small as the backlog.
CREATE INDEX change_log_unpublished_idx ON change_log (version) WHERE published_at IS NULL;
