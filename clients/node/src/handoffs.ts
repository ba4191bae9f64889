// HandoffSet: the open handoffs at one version, kept beside the mapping
// (the port of client/src/handoff_set.h). Built from
// MappingSnapshot.handoffs, then carried by MappingDelta.handoffs: a
// handoff in a final phase leaves the set.
//
// A team is in an open handoff when it is listed in it (team_ids: pins and
// pool assignments that left the source), or when it has no pin, its pool
// is the handoff's source_pool, placement over pool_before gives the
// source, and its route now is another bucket.

import { invalid } from './errors';
import { TeamId, compareTeamIds, normalizeTeamId } from './model';
import { PlacementTable } from './placement';
import { HandoffMsg, HandoffPhase, toInt, toTeamId } from './proto';

/** One open handoff that involves a team (as the C++ TeamHandoff). */
export interface TeamHandoff {
  readonly handoffId: number;
  /** SWITCHING or DRAINING. */
  readonly phase: HandoffPhase;
  /** The version whose route change opened it (v in SPEC §5). */
  readonly openedVersion: number;
  readonly sourceBucketId: number;
  /** Where the team goes: its listed target, or its route now. */
  readonly targetBucketId: number;
  /** False for an emergency move: consumers hold nothing. */
  readonly ordered: boolean;
}

/** handoffState(team): every open handoff involving the team. */
export interface HandoffStatus {
  /** The version the answer was computed from; 0 without a mapping. */
  readonly version: number;
  /** Ascending by handoff id; empty when the team is in none. */
  readonly handoffs: readonly TeamHandoff[];
  readonly open: boolean;
}

/** Passed to onHandoffDone() callbacks once the team's last handoff ended. */
export interface HandoffEnd {
  teamId: TeamId;
  /** The handoff that ended last. */
  handoffId: number;
  /**
   * COMPLETED, FORCED or CANCELLED; UNSPECIFIED when the client never saw
   * the final phase (a snapshot no longer lists it, or a reset).
   */
  endState: HandoffPhase;
  endReason: string;
  missingProducers: string[];
  /** The version at which the client learned that it ended. */
  version: number;
}

export function isOpenPhase(phase: number): boolean {
  return phase === HandoffPhase.SWITCHING || phase === HandoffPhase.DRAINING;
}

function isFinal(phase: number): boolean {
  return phase === HandoffPhase.COMPLETED || phase === HandoffPhase.FORCED || phase === HandoffPhase.CANCELLED;
}

export interface HandoffEntry {
  readonly msg: HandoffMsg;
  readonly id: number;
  readonly teamIds: readonly TeamId[];
  readonly toBucketIds: readonly number[];
  /** Placement over pool_before; null when it is empty. */
  readonly before: PlacementTable | null;
}

/**
 * What every handoff of a snapshot or a delta must be, ended or not (the
 * server refuses the same): an id >= 1 that the list does not repeat, and
 * ascending team ids, each with its target.
 */
function checkHandoffs(handoffs: readonly HandoffMsg[], field: string): void {
  const ids = new Set<number>();
  handoffs.forEach((h, i) => {
    const at = `${field}[${i}]`;
    const id = toInt(h.id);
    if (!(id >= 1)) throw invalid(`${at}.id: must be >= 1, got ${id}`);
    if (ids.has(id)) throw invalid(`${at}.id: handoff ${id} appears twice`);
    ids.add(id);
    const teams = (h.team_ids ?? []).map((t) => normalizeTeamId(toTeamId(t)));
    const to = h.to_bucket_ids ?? [];
    if (teams.length !== to.length) {
      throw invalid(`${at}.to_bucket_ids: ${to.length} targets for ${teams.length} team ids`);
    }
    for (let j = 1; j < teams.length; ++j) {
      if (compareTeamIds(teams[j - 1], teams[j]) > 0) throw invalid(`${at}.team_ids: not in ascending order`);
    }
  });
}

/** An open handoff, checked by checkHandoffs, as the set keeps it. */
function makeEntry(h: HandoffMsg, field: string): HandoffEntry {
  const id = toInt(h.id);
  const teams = h.team_ids ?? [];
  const to = h.to_bucket_ids ?? [];
  let before: PlacementTable | null = null;
  const poolBefore = h.pool_before ?? [];
  if (poolBefore.length > 0) {
    const ids = new Set<number>();
    for (let i = 0; i < poolBefore.length; ++i) {
      const m = poolBefore[i];
      if (!(m.bucket_id >= 1) || !(m.weight >= 1) || ids.has(m.bucket_id)) {
        throw invalid(
          `${field}.pool_before[${i}]: bucket ${m.bucket_id} weight ${m.weight} (ids must be unique and >= 1, weights >= 1)`,
        );
      }
      ids.add(m.bucket_id);
    }
    before = PlacementTable.build(poolBefore.map((m) => ({ bucketId: m.bucket_id, weight: m.weight })));
  }
  return {
    msg: h,
    id,
    teamIds: teams.map((t) => normalizeTeamId(toTeamId(t))),
    toBucketIds: [...to],
    before,
  };
}

export class HandoffSet {
  /** Ascending by handoff id. */
  readonly entries: readonly HandoffEntry[];
  /** True when some entry has a pool_before placement. */
  readonly hasPoolHandoffs: boolean;
  // Listed team -> indexes into entries.
  private readonly listed: Map<TeamId, number[]>;

  private constructor(entries: HandoffEntry[]) {
    this.entries = entries;
    this.listed = new Map();
    let pool = false;
    entries.forEach((e, i) => {
      for (const t of e.teamIds) {
        const l = this.listed.get(t);
        if (l === undefined) this.listed.set(t, [i]);
        else if (l[l.length - 1] !== i) l.push(i);
      }
      pool = pool || e.before !== null;
    });
    this.hasPoolHandoffs = pool;
  }

  static readonly EMPTY = new HandoffSet([]);

  /** The set of MappingSnapshot.handoffs; final ones are left out. */
  static build(handoffs: readonly HandoffMsg[], field: string): HandoffSet {
    if (handoffs.length === 0) return HandoffSet.EMPTY;
    checkHandoffs(handoffs, field);
    const entries: HandoffEntry[] = [];
    handoffs.forEach((h, i) => {
      if (!isFinal(h.state)) entries.push(makeEntry(h, `${field}[${i}]`));
    });
    entries.sort((a, b) => a.id - b.id);
    return entries.length === 0 ? HandoffSet.EMPTY : new HandoffSet(entries);
  }

  /**
   * The set after `changes` (MappingDelta.handoffs); `this` when there are
   * none. Pushes the handoffs that reached a final phase onto `ended`.
   */
  apply(changes: readonly HandoffMsg[], field: string, ended: HandoffMsg[]): HandoffSet {
    if (changes.length === 0) return this;
    checkHandoffs(changes, field);
    const entries = [...this.entries];
    changes.forEach((h, i) => {
      const id = toInt(h.id);
      const at = entries.findIndex((e) => e.id >= id);
      const present = at >= 0 && entries[at].id === id;
      if (isFinal(h.state)) {
        if (present) entries.splice(at, 1);
        ended.push(h);
        return;
      }
      const entry = makeEntry(h, `${field}[${i}]`);
      if (present) entries[at] = entry;
      else if (at < 0) entries.push(entry);
      else entries.splice(at, 0, entry);
    });
    return entries.length === 0 ? HandoffSet.EMPTY : new HandoffSet(entries);
  }

  get empty(): boolean {
    return this.entries.length === 0;
  }

  /**
   * The open handoffs involving `team`, ascending by id.
   *   pinned: the team is pinned now (pool-based moves never apply);
   *   pool:   its pool now (its pool assignment, or "default");
   *   bucket: its route now (0 when unroutable);
   *   slot:   its slot (teamSlot()).
   */
  find(team: TeamId, pinned: boolean, pool: string, bucket: number, slot: number): TeamHandoff[] {
    const out: TeamHandoff[] = [];
    if (this.entries.length === 0) return out;
    const add = (e: HandoffEntry, target: number): void => {
      out.push(
        Object.freeze({
          handoffId: e.id,
          phase: e.msg.state as HandoffPhase,
          openedVersion: toInt(e.msg.opened_version),
          sourceBucketId: e.msg.source_bucket_id,
          targetBucketId: target,
          ordered: e.msg.ordered,
        }),
      );
    };
    const listedIn = this.listed.get(team) ?? [];
    for (const i of listedIn) {
      const e = this.entries[i];
      const index = e.teamIds.findIndex((t) => compareTeamIds(t, team) === 0);
      add(e, e.toBucketIds[index]);
    }
    if (!pinned && this.hasPoolHandoffs) {
      this.entries.forEach((e, i) => {
        if (!listedIn.includes(i) && poolMoved(e, pool, slot, bucket)) add(e, bucket);
      });
    }
    return out.sort((a, b) => a.handoffId - b.handoffId);
  }

  /** Whether `team` is listed in any entry. */
  lists(team: TeamId): boolean {
    return this.listed.has(team);
  }

  /** True when teams of `pool` in `slot`, routed to `bucket` now, are moving. */
  slotMoved(pool: string, slot: number, bucket: number): boolean {
    if (!this.hasPoolHandoffs) return false;
    for (const e of this.entries) if (poolMoved(e, pool, slot, bucket)) return true;
    return false;
  }

  /** The teams listed in any entry. */
  listedTeams(): TeamId[] {
    return [...this.listed.keys()];
  }
}

function poolMoved(e: HandoffEntry, pool: string, slot: number, bucket: number): boolean {
  const h = e.msg;
  return (
    e.before !== null &&
    h.source_pool === pool &&
    e.before.bucketForSlot(slot) === h.source_bucket_id &&
    bucket !== h.source_bucket_id
  );
}
