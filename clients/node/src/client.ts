// Client: an in-process copy of the team -> bucket mapping for Node.js
// producers and consumers (the port of client/include/bucketmap/client.h).
//
// A Client holds the newest MappingView it has been given and answers
// route(teamId) from it without allocating. Views come from a full
// MappingSnapshot, from MappingDelta frames applied on top of the current
// view, or from the last-known-good cache file (in the C++ library's
// format: either library reads the other's).
//
// Node runs one thread per isolate: a view is immutable, a publication
// replaces the current one in a single assignment, and listeners run
// synchronously after it. A route() call always answers from exactly one
// version. Worker threads each need their own Client.
//
// Feeding the client (the transport seam; WatchConnection does it):
//   subscribe with version and clusterId;
//   Push.snapshot -> applySnapshot(); Push.deltas -> applyDeltas();
//   ACK the version on success, NACK with the error's message otherwise;
//   Sync/Heartbeat -> confirmCurrent(serverVersion);
//   start-up without a server -> loadCache(); after applying -> writeCache().

import { BucketmapError, failedPrecondition } from './errors';
import { HandoffEnd, HandoffSet, HandoffStatus, TeamHandoff } from './handoffs';
import { Mapping, bucketToMsg } from './mapping';
import {
  Bucket,
  BucketState,
  NO_MAPPING_ROUTE,
  Route,
  RouteSource,
  TeamId,
  normalizeTeamId,
  validTeamId,
} from './model';
import { teamSlot } from './placement';
import {
  ClientRole,
  HandoffMsg,
  HandoffPhase,
  Int64,
  MappingDeltaMsg,
  MappingSnapshotMsg,
  toInt,
  toLong,
  toTeamId,
} from './proto';
import { RouteIndex } from './route_index';
import { decodeCacheFile, encodeCacheFile, readCacheFile, writeFileAtomic } from './cache_file';
import { Logger, defaultLogger } from './log';

/** The whole mapping at one version, with its routing index. Immutable. */
export class MappingView {
  readonly mapping: Mapping;
  readonly handoffs: HandoffSet;
  private readonly index: RouteIndex;

  /** @internal */
  constructor(mapping: Mapping, handoffs: HandoffSet, index: RouteIndex) {
    this.mapping = mapping;
    this.handoffs = handoffs;
    this.index = index;
  }

  get version(): number {
    return this.mapping.version;
  }

  get clusterId(): string {
    return this.mapping.clusterId;
  }

  /** @internal */
  get routeIndex(): RouteIndex {
    return this.index;
  }

  /** The route of `teamId` in this view. Allocation-free for number ids. */
  route(teamId: TeamId): Route {
    return this.index.lookup(teamId);
  }

  /** Every bucket, RETIRED ones included, ascending by id. */
  get buckets(): readonly Bucket[] {
    return this.mapping.buckets;
  }

  findBucket(id: number): Bucket | undefined {
    return this.mapping.findBucket(id);
  }

  /** The topic of `role` of bucket `bucketId`, or undefined. */
  topic(bucketId: number, role: string): string | undefined {
    const b = this.mapping.findBucket(bucketId);
    return b === undefined ? undefined : Object.prototype.hasOwnProperty.call(b.topics, role) ? b.topics[role] : undefined;
  }

  get pools(): readonly string[] {
    return this.mapping.pools;
  }

  /**
   * The teams with an override (a pin or a pool assignment) routed to
   * `bucketId` at this version, ascending. Default-placed teams are not
   * listed (there is no list of them): use owns().
   */
  teamsInBucket(bucketId: number): TeamId[] {
    const m = this.mapping;
    const out: TeamId[] = [];
    for (let i = 0; i < m.teamIds.length; ++i) {
      const t = m.targets[i];
      const bucket = t > 0 ? t : m.poolTable(m.pools[-t - 1]).bucketForTeam(m.teamIds[i]);
      if (bucket === bucketId) out.push(m.teamIds[i]);
    }
    return out;
  }

  /** True when the team's route is `bucketId`: by pin, pool or default placement. */
  owns(bucketId: number, teamId: TeamId): boolean {
    const r = this.route(teamId);
    return r.routable && r.bucketId === bucketId;
  }

  /** The open handoffs involving `teamId` at this version. */
  handoffState(teamId: TeamId): HandoffStatus {
    const empty = { version: this.version, handoffs: [], open: false };
    if (this.handoffs.empty || !validTeamId(teamId)) return empty;
    const team = normalizeTeamId(teamId);
    const r = this.route(team);
    const list: TeamHandoff[] = this.handoffs.find(
      team,
      r.source === RouteSource.PIN,
      r.pool,
      r.bucketId,
      teamSlot(team),
    );
    return { version: this.version, handoffs: list, open: list.length > 0 };
  }

  /** The open handoffs at this version, ascending by id, as the server sent them. */
  openHandoffs(): readonly HandoffMsg[] {
    return this.handoffs.entries.map((e) => e.msg);
  }

  /** This view as a MappingSnapshot (plain object), open handoffs included. */
  toSnapshotObject(): Record<string, unknown> {
    const m = this.mapping;
    return {
      version: m.version,
      cluster_id: m.clusterId,
      buckets: m.buckets.map(bucketToMsg),
      pools: [...m.pools],
      assignments: {
        team_ids: m.teamIds.map((t) => (typeof t === 'bigint' ? toLong(t) : t)),
        targets: [...m.targets],
      },
      handoffs: this.openHandoffs(),
    };
  }
}

/** Passed to onChange listeners after each publication. */
export interface ChangeEvent {
  /** 0 when nothing was loaded before. */
  oldVersion: number;
  newVersion: number;
  /** True when the cluster id changed: all earlier state was dropped. */
  reset: boolean;
  view: MappingView;
}

export interface ClientOptions {
  /** Server addresses ("host:port"), tried in turn by the watch connection. */
  addresses?: string[];
  /** Identifies this process in ListClients; unique and stable across restarts. */
  clientId: string;
  role?: ClientRole;
  /** The last-known-good cache file; empty disables it. */
  cachePath?: string;
  /** Sent as "authorization: Bearer <token>"; empty sends nothing. */
  bearerToken?: string;
  /** Milliseconds since the epoch, for staleness and the cache file. Default Date.now. */
  clock?: () => number;
  logger?: Logger;
}

interface HandoffWaiter {
  id: number;
  team: TeamId;
  done: (end: HandoffEnd) => void;
  handoffIds: number[];
  last: HandoffEnd;
}

export class Client {
  readonly options: Readonly<Required<Omit<ClientOptions, 'logger' | 'clock'>>>;
  readonly logger: Logger;
  private readonly clock: () => number;
  private view: MappingView | null = null;
  // Unix ms of the last confirmation; -Infinity before any.
  private confirmedAt = -Infinity;
  private nextListenerId = 1;
  private readonly listeners = new Map<number, (e: ChangeEvent) => void>();
  private handoffWaiters: HandoffWaiter[] = [];
  private versionWaiters: Array<{ version: number; resolve: (ok: boolean) => void }> = [];
  // Serializes cache writes, so a file never goes back in version.
  private cacheWrite: Promise<void> = Promise.resolve();

  constructor(options: ClientOptions) {
    this.options = {
      addresses: options.addresses ?? [],
      clientId: options.clientId,
      role: options.role ?? ClientRole.PRODUCER,
      cachePath: options.cachePath ?? '',
      bearerToken: options.bearerToken ?? '',
    };
    this.clock = options.clock ?? Date.now;
    this.logger = options.logger ?? defaultLogger;
  }

  // ---- Reads ----

  /**
   * The route of `teamId` at the current version: a pin, a pool
   * assignment or default placement, computed bit-identically with the
   * server. NO_MAPPING without a mapping; NO_PLACEABLE_BUCKET for a team
   * of a pool with no placeable bucket (never a guess); INVALID_TEAM for
   * an id < 1, a non-integer, or a number beyond 2^53 - 1 (pass those as
   * bigint). Allocation-free for number ids.
   */
  route(teamId: TeamId): Route {
    const v = this.view;
    return v === null ? NO_MAPPING_ROUTE : v.routeIndex.lookup(teamId);
  }

  /** The current view, or null before any mapping was loaded. */
  current(): MappingView | null {
    return this.view;
  }

  /** The current version; 0 before any mapping was loaded. */
  get version(): number {
    return this.view === null ? 0 : this.view.version;
  }

  /** The current cluster id; "" before any mapping was loaded. */
  get clusterId(): string {
    return this.view === null ? '' : this.view.clusterId;
  }

  /** The state of a bucket (PAUSED tells its consumers to stop), or undefined. */
  bucketState(bucketId: number): BucketState | undefined {
    return this.view?.findBucket(bucketId)?.state;
  }

  owns(bucketId: number, teamId: TeamId): boolean {
    const r = this.route(teamId);
    return r.routable && r.bucketId === bucketId;
  }

  teamsInBucket(bucketId: number): TeamId[] {
    return this.view === null ? [] : this.view.teamsInBucket(bucketId);
  }

  /**
   * The open handoffs involving `teamId` at the current version: open while
   * any is (SPEC §5 rule 7). route(team).handoff is the same test without
   * the details, and is what to call per event.
   */
  handoffState(teamId: TeamId): HandoffStatus {
    return this.view === null ? { version: 0, handoffs: [], open: false } : this.view.handoffState(teamId);
  }

  /**
   * Registers `done`, called once, when the last open handoff involving
   * `teamId` has ended, after the onChange listeners of that publication.
   * Returns 0 and registers nothing when no open handoff involves the team.
   */
  onHandoffDone(teamId: TeamId, done: (end: HandoffEnd) => void): number {
    const status = this.handoffState(teamId);
    if (!status.open) return 0;
    const id = this.nextListenerId++;
    const team = normalizeTeamId(teamId);
    this.handoffWaiters.push({
      id,
      team,
      done,
      handoffIds: status.handoffs.map((h) => h.handoffId),
      last: {
        teamId: team,
        handoffId: 0,
        endState: HandoffPhase.UNSPECIFIED,
        endReason: '',
        missingProducers: [],
        version: 0,
      },
    });
    return id;
  }

  removeHandoffCallback(id: number): void {
    this.handoffWaiters = this.handoffWaiters.filter((w) => w.id !== id);
  }

  /**
   * Milliseconds since the mapping was last known to be current: the last
   * applySnapshot()/applyDeltas(), a confirmCurrent() with a server version
   * not above ours, or the time recorded in the cache file. Infinity before
   * any mapping was loaded.
   */
  staleness(): number {
    if (this.confirmedAt === -Infinity) return Infinity;
    return Math.max(0, this.clock() - this.confirmedAt);
  }

  /** Resolves true once version >= `version`, false after `timeoutMs`. */
  waitForVersion(version: number, timeoutMs: number): Promise<boolean> {
    if (this.version >= version) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: { version: number; resolve: (ok: boolean) => void } = { version, resolve };
      const timer = setTimeout(() => {
        this.versionWaiters = this.versionWaiters.filter((w) => w !== waiter);
        resolve(this.version >= version);
      }, timeoutMs);
      waiter.resolve = (ok: boolean) => {
        clearTimeout(timer);
        resolve(ok);
      };
      this.versionWaiters.push(waiter);
    });
  }

  /**
   * Registers `listener`, called synchronously after each publication
   * (applySnapshot(), applyDeltas() with at least one delta, a loadCache()
   * that loads), in registration order.
   */
  onChange(listener: (e: ChangeEvent) => void): number {
    const id = this.nextListenerId++;
    this.listeners.set(id, listener);
    return id;
  }

  removeListener(id: number): void {
    this.listeners.delete(id);
  }

  // ---- Updates: the transport's seam ----

  /**
   * Replaces the mapping with `snapshot`. A snapshot of another cluster id
   * resets the client (listeners see reset = true). Throws a
   * BucketmapError: INVALID_ARGUMENT for a malformed snapshot (the message
   * names the field), FAILED_PRECONDITION for one of the same cluster older
   * than the current version; nothing changes then.
   */
  applySnapshot(snapshot: MappingSnapshotMsg): void {
    const mapping = Mapping.fromSnapshot(snapshot);
    const handoffs = HandoffSet.build(snapshot.handoffs ?? [], 'snapshot.handoffs');
    const index = RouteIndex.build(mapping, handoffs);
    const current = this.view;
    const reset = current !== null && current.clusterId !== mapping.clusterId;
    if (current !== null && !reset && mapping.version < current.version) {
      throw failedPrecondition(
        `snapshot.version: ${mapping.version} is older than the applied version ${current.version}`,
      );
    }
    if (reset) {
      this.logger.warn(
        `bucketmap client: cluster_id changed from ${current!.clusterId} to ${mapping.clusterId}; dropping the mapping at version ${current!.version} and taking the snapshot at version ${mapping.version}`,
      );
    }
    this.publish(new MappingView(mapping, handoffs, index), reset, this.clock(), []);
  }

  /**
   * Applies consecutive deltas on top of the current mapping and publishes
   * the result once; all or nothing. Throws FAILED_PRECONDITION with no
   * mapping or when deltas[0].from_version is not the current version
   * (resync with a snapshot), INVALID_ARGUMENT for a malformed or
   * non-contiguous delta.
   */
  applyDeltas(deltas: readonly MappingDeltaMsg[]): void {
    if (deltas.length === 0) return;
    const current = this.view;
    if (current === null) throw failedPrecondition('deltas: no mapping is loaded; a snapshot must come first');
    const first = toInt(deltas[0].from_version);
    if (first !== current.version) {
      throw failedPrecondition(
        `deltas[0].from_version: ${first}, but the client is at version ${current.version}; resync with a snapshot`,
      );
    }
    let mapping = current.mapping;
    let handoffs = current.handoffs;
    const ended: HandoffMsg[] = [];
    // Bucket changes can move any override's precomputed route; they
    // rebuild the index, and so does a pool-based handoff that opens or
    // ends. Override-only deltas update just the touched teams.
    let rebuild = false;
    const touched: TeamId[] = [];
    deltas.forEach((d, i) => {
      const field = `deltas[${i}]`;
      const from = toInt(d.from_version);
      const to = toInt(d.to_version);
      if (from !== mapping.version) {
        throw new BucketmapError('INVALID_ARGUMENT', `${field}.from_version: ${from} does not follow version ${mapping.version}`);
      }
      if (to !== from + 1) {
        throw new BucketmapError('INVALID_ARGUMENT', `${field}.to_version: ${to}; a delta spans one version, from ${from}`);
      }
      rebuild = rebuild || (d.buckets ?? []).length > 0;
      for (const h of d.handoffs ?? []) {
        const id = toInt(h.id);
        for (const e of handoffs.entries) {
          if (e.id !== id) continue;
          rebuild = rebuild || e.before !== null;
          touched.push(...e.teamIds);
        }
        rebuild = rebuild || (h.pool_before ?? []).length > 0;
      }
      handoffs = handoffs.apply(d.handoffs ?? [], `${field}.handoffs`, ended);
      for (const h of d.handoffs ?? []) for (const t of h.team_ids ?? []) touched.push(normalizeTeamIdLong(t));
      const next = mapping.applyDelta(d, field);
      for (const t of d.set?.team_ids ?? []) touched.push(normalizeTeamIdLong(t));
      for (const t of d.unset_team_ids ?? []) touched.push(normalizeTeamIdLong(t));
      mapping = next;
    });
    // Pool indexes are part of routes; a new pool table renumbers them.
    rebuild =
      rebuild ||
      mapping.pools.length !== current.mapping.pools.length ||
      mapping.pools.some((p, i) => p !== current.mapping.pools[i]);
    const index = rebuild
      ? RouteIndex.build(mapping, handoffs)
      : RouteIndex.update(current.routeIndex, mapping, handoffs, touched);
    this.publish(new MappingView(mapping, handoffs, index), false, this.clock(), ended);
  }

  /**
   * Reports the server's current version (SYNC or a heartbeat). When it is
   * not above ours, the mapping is current: staleness restarts from zero.
   */
  confirmCurrent(serverVersion: number): void {
    if (this.view === null) return;
    if (serverVersion <= this.view.version) this.confirmedAt = this.clock();
  }

  // ---- The cache file ----

  /**
   * Seeds the mapping from the last-known-good file (`file`, or
   * options.cachePath), for a start without a server; staleness() then
   * reflects the file's confirmation time. Throws a BucketmapError:
   * INVALID_ARGUMENT (no path), NOT_FOUND (no file), DATA_LOSS (corrupt or
   * truncated), FAILED_PRECONDITION (unknown format version, or another
   * cluster than the loaded mapping); the mapping is unchanged then, and
   * the file is logged as ignored. A file no newer than the loaded mapping
   * is not loaded, without error. Resolves to whether it loaded.
   */
  async loadCache(file: string = this.options.cachePath): Promise<boolean> {
    if (!file) throw new BucketmapError('INVALID_ARGUMENT', 'cache_path: empty');
    let contents;
    try {
      contents = await readCacheFile(file);
    } catch (e) {
      if (e instanceof BucketmapError && e.code === 'NOT_FOUND') this.logger.info(`bucketmap client: no cache file at ${file}`);
      else this.logger.warn(`bucketmap client: ignoring cache file ${file}: ${(e as Error).message}`);
      throw e;
    }
    return this.loadCacheContents(file, contents.snapshot, contents.confirmedAtMs);
  }

  /** loadCache() from bytes already read (e.g. tests). */
  loadCacheBytes(bytes: Buffer, name = '<bytes>'): boolean {
    const contents = decodeCacheFile(bytes);
    return this.loadCacheContents(name, contents.snapshot, contents.confirmedAtMs);
  }

  private loadCacheContents(file: string, snapshot: MappingSnapshotMsg, confirmedAtMs: number): boolean {
    let view: MappingView;
    try {
      const mapping = Mapping.fromSnapshot(snapshot);
      const handoffs = HandoffSet.build(snapshot.handoffs ?? [], 'snapshot.handoffs');
      view = new MappingView(mapping, handoffs, RouteIndex.build(mapping, handoffs));
    } catch (e) {
      // A file that passed its checksum but does not build is still corrupt.
      this.logger.warn(`bucketmap client: ignoring cache file ${file}: ${(e as Error).message}`);
      throw new BucketmapError('DATA_LOSS', `cache file: ${(e as Error).message}`);
    }
    const current = this.view;
    if (current !== null) {
      if (current.clusterId !== view.clusterId) {
        this.logger.warn(
          `bucketmap client: ignoring cache file ${file} of cluster ${view.clusterId}; the mapping is of ${current.clusterId}`,
        );
        throw failedPrecondition(
          `cache file: of cluster ${view.clusterId} while the loaded mapping is of cluster ${current.clusterId}`,
        );
      }
      if (view.version <= current.version) return false;
    }
    this.logger.info(
      `bucketmap client: loaded mapping version ${view.version} of cluster ${view.clusterId} from ${file}, confirmed ${Math.round((this.clock() - confirmedAtMs) / 1000)} s ago`,
    );
    this.publish(view, false, confirmedAtMs, []);
    return true;
  }

  /**
   * Writes the current mapping to the cache file atomically (temporary
   * file, fsync, rename, fsync of the directory). Writes are serialized, so
   * the file never goes back in version. Rejects with INVALID_ARGUMENT (no
   * path), FAILED_PRECONDITION (no mapping), or the failing system call's
   * error.
   */
  writeCache(file: string = this.options.cachePath): Promise<void> {
    if (!file) return Promise.reject(new BucketmapError('INVALID_ARGUMENT', 'cache_path: empty'));
    const write = this.cacheWrite.then(async () => {
      // Taken when this write's turn comes: never older than the last one.
      const view = this.view;
      if (view === null) throw failedPrecondition('no mapping is loaded');
      const confirmed = this.confirmedAt === -Infinity ? this.clock() : this.confirmedAt;
      await writeFileAtomic(file, encodeCacheFile(view.toSnapshotObject(), confirmed));
    });
    this.cacheWrite = write.catch(() => undefined);
    return write;
  }

  // ---- Publication ----

  private publish(view: MappingView, reset: boolean, confirmedAt: number, ended: HandoffMsg[]): void {
    const oldVersion = this.version;
    this.view = view;
    this.confirmedAt = confirmedAt;
    if (this.versionWaiters.length > 0) {
      const ready = this.versionWaiters.filter((w) => w.version <= view.version);
      this.versionWaiters = this.versionWaiters.filter((w) => w.version > view.version);
      for (const w of ready) w.resolve(true);
    }
    const event: ChangeEvent = { oldVersion, newVersion: view.version, reset, view };
    for (const listener of [...this.listeners.values()]) {
      try {
        listener(event);
      } catch (e) {
        this.logger.error(`bucketmap client: onChange listener threw: ${(e as Error).stack ?? e}`);
      }
    }
    this.runHandoffCallbacks(view, ended);
  }

  private runHandoffCallbacks(view: MappingView, ended: HandoffMsg[]): void {
    if (this.handoffWaiters.length === 0) return;
    const done: HandoffWaiter[] = [];
    this.handoffWaiters = this.handoffWaiters.filter((w) => {
      for (const h of ended) {
        const id = toInt(h.id);
        if (!w.handoffIds.includes(id)) continue;
        w.last.handoffId = id;
        w.last.endState = h.state as HandoffPhase;
        w.last.endReason = h.end_reason ?? '';
        w.last.missingProducers = [...(h.missing_producers ?? [])];
      }
      const status = view.handoffState(w.team);
      if (status.open) {
        for (const h of status.handoffs) if (!w.handoffIds.includes(h.handoffId)) w.handoffIds.push(h.handoffId);
        return true;
      }
      w.last.version = view.version;
      if (w.last.handoffId === 0) {
        // Ended unseen (a snapshot no longer lists it, or a reset).
        w.last.handoffId = Math.max(...w.handoffIds);
      }
      done.push(w);
      return false;
    });
    for (const w of done) {
      try {
        w.done(w.last);
      } catch (e) {
        this.logger.error(`bucketmap client: onHandoffDone callback threw: ${(e as Error).stack ?? e}`);
      }
    }
  }
}

function normalizeTeamIdLong(t: Int64): TeamId {
  return normalizeTeamId(toTeamId(t));
}
