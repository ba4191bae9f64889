// kafkajs glue for coordinated moves (SPEC §5; docs/handoff.md), the
// counterpart of the C++ bucketmap/kafka_hold.h. kafkajs is not imported:
// the types below are the few members used, so this library does not
// depend on it.
//
// Producers: stamp each event with its route version (versionHeaders())
// and give the tracker's ticket back when the send settles
// (DeliveryTracker.track()).
//
// Consumers: KafkaPartitionHold applies HandoffGate to a kafkajs consumer
// run with eachBatch and `eachBatchAutoResolve: false`, resolving each
// message's offset only after processing it (rule 6: the committed offset
// never passes an unprocessed event):
//
//   await consumer.run({
//     eachBatchAutoResolve: false,
//     eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
//       for (const message of batch.messages) {
//         if (!isRunning() || isStale()) break;
//         const team = ...;  // from the key or the value
//         if (hold.admit(batch.topic, batch.partition, message, team, myBucket) !== 'process') break;
//         await process(message);
//         resolveOffset(message.offset);
//         await heartbeat();
//       }
//     },
//   });
//
// A held message pauses its partition, and the batch stops there: kafkajs
// fetches from the last resolved offset, so the held message is the first
// one fetched again once the partition resumes, and nothing after it is
// resolved or committed meanwhile. The broker keeps the backlog; nothing
// is buffered in memory. Messages of a held partition that were already
// fetched are skipped. The hold resumes a partition as soon as a new
// version opens its gate (it listens to the client's publications). On a
// rebalance, forget() the revoked partitions.

import type { Client } from './client';
import { GateDecision, HandoffGate, VERSION_HEADER, parseVersionHeader } from './gate';
import type { Route, TeamId } from './model';

/** The part of a kafkajs Consumer the hold uses. */
export interface PausableConsumer {
  pause(topics: Array<{ topic: string; partitions?: number[] }>): void;
  resume(topics: Array<{ topic: string; partitions?: number[] }>): void;
}

/** The part of a kafkajs message the hold reads. */
export interface HeldMessage {
  offset: string;
  headers?: Record<string, Buffer | string | Array<Buffer | string> | undefined>;
}

/** The headers a producer stamps an event with: its route version. */
export function versionHeaders(route: Route): Record<string, string> {
  return { [VERSION_HEADER]: String(route.version) };
}

/** A message's bucketmap-version stamp, or 0 when it has none. */
export function stampedVersion(message: HeldMessage): number {
  return parseVersionHeader(message.headers?.[VERSION_HEADER]);
}

export type Admission = 'process' | 'held' | 'skip';

interface Held {
  offset: bigint;
  team: TeamId;
  bucketId: number;
  stamp: number;
  since: number;
}

export interface HoldStats {
  /** Partitions paused so far, and resumed. */
  holds: number;
  resumes: number;
  /** Messages skipped because their partition was held or resuming. */
  skipped: number;
  /** Milliseconds held, summed over ended holds. */
  heldMs: number;
}

export class KafkaPartitionHold {
  private readonly gate: HandoffGate;
  private readonly held = new Map<string, Held>();
  // Resumed partitions, until their held offset is delivered again.
  private readonly resuming = new Map<string, bigint>();
  private readonly listener: number;
  readonly stats: HoldStats = { holds: 0, resumes: 0, skipped: 0, heldMs: 0 };

  constructor(
    private readonly consumer: PausableConsumer,
    private readonly client: Client,
  ) {
    this.gate = new HandoffGate(client);
    this.listener = client.onChange(() => this.resumeReady());
  }

  /** Stops listening to the client. */
  close(): void {
    this.client.removeListener(this.listener);
  }

  /**
   * Decides for `message` of team `teamId` read from `topic`/`partition`
   * of bucket `bucketId` (its stamp is the bucketmap-version header).
   * 'process': process it, then resolve its offset. 'held': the gate said
   * hold; the partition is now paused at this message: stop the batch.
   * 'skip': the partition is held or about to re-deliver its held message:
   * stop the batch; the message comes again.
   */
  admit(topic: string, partition: number, message: HeldMessage, teamId: TeamId, bucketId: number): Admission {
    const key = `${partition}\u0000${topic}`;
    if (this.held.has(key)) {
      ++this.stats.skipped;
      return 'skip';
    }
    const offset = BigInt(message.offset);
    const resumeAt = this.resuming.get(key);
    if (resumeAt !== undefined) {
      if (offset > resumeAt) {
        // Fetched before the pause: it comes again after the held one.
        ++this.stats.skipped;
        return 'skip';
      }
      this.resuming.delete(key);
    }
    const stamp = stampedVersion(message);
    const d: GateDecision = this.gate.check(teamId, bucketId, stamp);
    if (d.process) return 'process';
    this.consumer.pause([{ topic, partitions: [partition] }]);
    this.held.set(key, { offset, team: teamId, bucketId, stamp, since: Date.now() });
    ++this.stats.holds;
    this.client.logger.info(
      `bucketmap hold: ${topic}[${partition}] held at offset ${offset} for team ${teamId} (${d.reason})`,
    );
    return 'held';
  }

  /**
   * Resumes the partitions whose gate has opened; returns how many. Runs by
   * itself after every publication of the client.
   */
  resumeReady(): number {
    let resumed = 0;
    for (const [key, h] of [...this.held]) {
      if (!this.gate.check(h.team, h.bucketId, h.stamp).process) continue;
      const sep = key.indexOf('\u0000');
      const partition = Number(key.slice(0, sep));
      const topic = key.slice(sep + 1);
      this.held.delete(key);
      this.resuming.set(key, h.offset);
      this.stats.heldMs += Date.now() - h.since;
      ++this.stats.resumes;
      ++resumed;
      this.consumer.resume([{ topic, partitions: [partition] }]);
    }
    return resumed;
  }

  /** Drops the state of revoked partitions (a rebalance). */
  forget(topic: string, partitions: number[]): void {
    for (const p of partitions) {
      this.held.delete(`${p}\u0000${topic}`);
      this.resuming.delete(`${p}\u0000${topic}`);
    }
  }

  /** Partitions held now. */
  get heldCount(): number {
    return this.held.size;
  }
}
