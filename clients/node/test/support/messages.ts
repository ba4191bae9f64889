// Builders of wire messages for unit tests: plain objects turned into
// protobufjs messages (int64 fields become Long, as off the wire).
import { messageType } from '../../src/proto';
import type { MappingDeltaMsg, MappingSnapshotMsg } from '../../src/proto';

export interface BucketSpec {
  id: number;
  name?: string;
  state?: number;
  weight?: number;
  pool?: string;
  topics?: Record<string, string>;
}

export function bucket(b: BucketSpec): Record<string, unknown> {
  return {
    id: b.id,
    name: b.name ?? `b${b.id}`,
    state: b.state ?? 1,
    weight: b.weight ?? 100,
    pool: b.pool ?? 'default',
    topics: b.topics ?? { ingestion: `events_${b.id}` },
  };
}

/** Team ids may be numbers or bigints (sent as decimal strings). */
function ids(teams: Array<number | bigint>): Array<number | string> {
  return teams.map((t) => (typeof t === 'bigint' ? t.toString() : t));
}

export function snapshot(s: {
  version: number;
  clusterId?: string;
  buckets: BucketSpec[];
  pools?: string[];
  teams?: Array<number | bigint>;
  targets?: number[];
  handoffs?: Array<Record<string, unknown>>;
}): MappingSnapshotMsg {
  const type = messageType('MappingSnapshot');
  return type.fromObject({
    version: s.version,
    cluster_id: s.clusterId ?? 'cluster-a',
    buckets: s.buckets.map(bucket),
    pools: s.pools ?? [],
    assignments: { team_ids: ids(s.teams ?? []), targets: s.targets ?? [] },
    handoffs: s.handoffs ?? [],
  }) as unknown as MappingSnapshotMsg;
}

export function delta(d: {
  from: number;
  to?: number;
  buckets?: BucketSpec[];
  pools?: string[];
  set?: Array<number | bigint>;
  targets?: number[];
  unset?: Array<number | bigint>;
  handoffs?: Array<Record<string, unknown>>;
}): MappingDeltaMsg {
  return messageType('MappingDelta').fromObject({
    from_version: d.from,
    to_version: d.to ?? d.from + 1,
    buckets: (d.buckets ?? []).map(bucket),
    pools: d.pools ?? [],
    set: { team_ids: ids(d.set ?? []), targets: d.targets ?? [] },
    unset_team_ids: ids(d.unset ?? []),
    handoffs: d.handoffs ?? [],
  }) as unknown as MappingDeltaMsg;
}

export function handoff(h: {
  id: number;
  openedVersion: number;
  source: number;
  state?: number;
  teams?: number[];
  to?: number[];
  sourcePool?: string;
  poolBefore?: Array<[number, number]>;
  ordered?: boolean;
  endReason?: string;
}): Record<string, unknown> {
  return {
    id: h.id,
    opened_version: h.openedVersion,
    source_bucket_id: h.source,
    state: h.state ?? 1,
    team_ids: h.teams ?? [],
    to_bucket_ids: h.to ?? [],
    source_pool: h.sourcePool ?? '',
    pool_before: (h.poolBefore ?? []).map(([bucket_id, weight]) => ({ bucket_id, weight })),
    ordered: h.ordered ?? true,
    end_reason: h.endReason ?? '',
  };
}
