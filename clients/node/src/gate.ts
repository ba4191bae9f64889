// HandoffGate: tells a consumer whether an event may be processed now
// (SPEC §5, rules 5 and 6); the port of bucketmap/handoff_gate.h.
//
// Producers stamp each event with the version of the route they used
// (header `bucketmap-version`). For an event of team T, read from bucket
// B, stamped with version s, check() answers:
//   - hold while the client's own version is below s: the producer knew of
//     a change this consumer has not applied yet (maybe the move into B);
//   - hold while an open, ordered handoff moves T into B (B is the
//     target): the source may still hold T's earlier events;
//   - process otherwise: in particular on the source bucket, which keeps
//     serving every team whose handoff from it is open.
// A hold ends with a new version: the client catches up to s, or the
// handoff reaches COMPLETED, FORCED or CANCELLED.
//
// What the consumer does with a hold (kafka.ts's PartitionHold does it for
// kafkajs): pause the partition at the event's offset, commit nothing past
// it, and resume from it when check() says process. Never buffer held
// events in memory.

import type { Client } from './client';
import type { TeamId } from './model';

/** The header producers stamp each event with (decimal route version). */
export const VERSION_HEADER = 'bucketmap-version';

export const GateReason = {
  /** Process: the team is in no open handoff. */
  NO_HANDOFF: 'no_handoff',
  /** Process: this bucket is the source of the team's open handoff. */
  SOURCE: 'source',
  /** Process: the team's open handoff is unordered. */
  UNORDERED: 'unordered',
  /** Process: the team's open handoff does not involve this bucket. */
  OTHER_BUCKET: 'other_bucket',
  /** Hold: the client is below the event's stamped version. */
  CLIENT_BEHIND: 'client_behind',
  /** Hold: an open handoff moves the team into this bucket. */
  TARGET_OF_OPEN_HANDOFF: 'target_of_open_handoff',
} as const;
export type GateReason = (typeof GateReason)[keyof typeof GateReason];

export interface GateDecision {
  process: boolean;
  reason: GateReason;
  /** CLIENT_BEHIND: the version to wait for. */
  waitVersion: number;
  /** TARGET_OF_OPEN_HANDOFF: the handoff's id. */
  handoffId: number;
}

const PROCESS: GateDecision = Object.freeze({ process: true, reason: GateReason.NO_HANDOFF, waitVersion: 0, handoffId: 0 });

/**
 * Parses a bucketmap-version header value (decimal). 0 (no stamp) for a
 * missing, empty or malformed value.
 */
export function parseVersionHeader(value: Buffer | string | undefined | null | Array<Buffer | string>): number {
  if (Array.isArray(value)) value = value[value.length - 1];
  if (value === undefined || value === null) return 0;
  const s = typeof value === 'string' ? value : value.toString('latin1');
  if (!/^[0-9]{1,15}$/.test(s)) return 0;
  return Number(s);
}

export class HandoffGate {
  constructor(private readonly client: Client) {}

  /**
   * May the event of `teamId`, read from bucket `bucketId` and stamped with
   * `stampedVersion` (0: unstamped, no version wait), be processed now?
   * Allocation-free unless the team is in an open handoff.
   */
  check(teamId: TeamId, bucketId: number, stampedVersion: number): GateDecision {
    if (this.client.version < stampedVersion) {
      return { process: false, reason: GateReason.CLIENT_BEHIND, waitVersion: stampedVersion, handoffId: 0 };
    }
    if (!this.client.route(teamId).handoff) return PROCESS;
    const status = this.client.handoffState(teamId);
    if (!status.open) return PROCESS;
    let reason: GateReason = GateReason.OTHER_BUCKET;
    for (const h of status.handoffs) {
      if (h.targetBucketId === bucketId && h.sourceBucketId !== bucketId) {
        if (!h.ordered) {
          reason = GateReason.UNORDERED;
          continue;
        }
        return { process: false, reason: GateReason.TARGET_OF_OPEN_HANDOFF, waitVersion: 0, handoffId: h.handoffId };
      }
      if (h.sourceBucketId === bucketId) reason = GateReason.SOURCE;
    }
    return { process: true, reason, waitVersion: 0, handoffId: 0 };
  }
}
