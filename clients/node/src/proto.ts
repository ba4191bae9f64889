// The wire contract (proto/bucketmap/v1), loaded at run time with
// protobufjs from the .proto files the package ships (npm run build copies
// them from the repository's proto/), and the TypeScript shapes of the
// decoded messages this library reads.
//
// Decoded messages keep the .proto field names (keepCase). 64-bit integers
// decode to Long objects; toTeamId()/toInt() convert them, and a nonce is
// echoed as the Long it came in, so that no uint64 goes through a double.

import * as path from 'path';
import * as fs from 'fs';
import * as protobuf from 'protobufjs';
import Long from 'long';

export type Int64 = Long | number;

export interface BucketMsg {
  id: number;
  name: string;
  state: number;
  weight: number;
  pool: string;
  topics: Record<string, string>;
  consumer_groups: Record<string, string>;
  drain_order: string[];
  labels: Record<string, string>;
  created_version: Int64;
  updated_version: Int64;
}

export interface AssignmentsMsg {
  team_ids: Int64[];
  targets: number[];
}

export interface PlacementMemberMsg {
  bucket_id: number;
  weight: number;
}

export interface HandoffMsg {
  id: Int64;
  opened_version: Int64;
  source_bucket_id: number;
  state: number;
  target_bucket_ids: number[];
  team_ids: Int64[];
  to_bucket_ids: number[];
  source_pool: string;
  pool_before: PlacementMemberMsg[];
  ordered: boolean;
  end_reason: string;
  missing_producers: string[];
  phase_version: Int64;
}

export interface MappingSnapshotMsg {
  version: Int64;
  cluster_id: string;
  buckets: BucketMsg[];
  pools: string[];
  assignments?: AssignmentsMsg | null;
  handoffs: HandoffMsg[];
}

export interface MappingDeltaMsg {
  from_version: Int64;
  to_version: Int64;
  buckets: BucketMsg[];
  pools: string[];
  set?: AssignmentsMsg | null;
  unset_team_ids: Int64[];
  handoffs: HandoffMsg[];
}

export interface PushMsg {
  from_version: Int64;
  to_version: Int64;
  nonce: Int64;
  snapshot?: MappingSnapshotMsg | null;
  deltas: MappingDeltaMsg[];
  reset: boolean;
  /** Set on an ACK_REQUESTED stream's pushes whose ACK the server needs at once. */
  ack_requested: boolean;
}

export interface WatchResponseMsg {
  push?: PushMsg | null;
  sync?: { version: Int64 } | null;
  heartbeat?: { version: Int64 } | null;
  kind?: string;
}

export const ClientRole = { UNSPECIFIED: 0, PRODUCER: 1, CONSUMER: 2, OBSERVER: 3 } as const;
export type ClientRole = (typeof ClientRole)[keyof typeof ClientRole];

export const HandoffPhase = {
  UNSPECIFIED: 0,
  SWITCHING: 1,
  DRAINING: 2,
  COMPLETED: 3,
  FORCED: 4,
  CANCELLED: 5,
} as const;
export type HandoffPhase = (typeof HandoffPhase)[keyof typeof HandoffPhase];

/** The folder holding bucketmap/v1/*.proto. */
export function protoDir(): string {
  // dist/src/proto.js -> ../../proto; src/proto.ts (ts-node) -> ../proto.
  for (const candidate of [path.join(__dirname, '..', '..', 'proto'), path.join(__dirname, '..', 'proto')]) {
    if (fs.existsSync(path.join(candidate, 'bucketmap', 'v1', 'mapping.proto'))) return candidate;
  }
  throw new Error('bucketmap: proto/bucketmap/v1 not found beside the package (run npm run build)');
}

let root: protobuf.Root | null = null;

/** The loaded contract, shared. */
export function protoRoot(): protobuf.Root {
  if (root !== null) return root;
  const dir = protoDir();
  const r = new protobuf.Root();
  r.resolvePath = (_origin: string, target: string) =>
    // google/protobuf/*.proto come with protobufjs (its "common" types).
    target.startsWith('google/protobuf/') ? target : path.join(dir, target);
  r.loadSync(['bucketmap/v1/mapping.proto', 'bucketmap/v1/admin.proto'], { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

/** The message type `name` of package bucketmap.v1 (e.g. "MappingSnapshot"). */
export function messageType(name: string): protobuf.Type {
  return protoRoot().lookupType(`bucketmap.v1.${name}`);
}

const TWO32 = 4294967296;

/**
 * A decoded int64 team id as a number when it is a safe integer, else a
 * bigint (ids beyond 2^53 - 1 are legal on the wire).
 */
export function toTeamId(v: Int64): number | bigint {
  if (typeof v === 'number') return v;
  if (v.high >= 0 && v.high < 0x200000) return v.high * TWO32 + (v.low >>> 0);
  return BigInt(v.toString());
}

/**
 * A decoded int64 that the protocol keeps small (versions, ids) as a
 * number. Throws RangeError beyond 2^53 - 1: this library keeps versions
 * as numbers.
 */
export function toInt(v: Int64 | null | undefined): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  if (v.high >= -0x200000 && v.high < 0x200000) return v.high * TWO32 + (v.low >>> 0);
  throw new RangeError(`int64 ${v.toString()} is beyond 2^53`);
}

/** A Long for an int64 field from a number or bigint. */
export function toLong(v: number | bigint, unsigned = false): Long {
  return typeof v === 'bigint' ? Long.fromString(v.toString(), unsigned) : Long.fromNumber(v, unsigned);
}
