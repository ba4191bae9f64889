// DeliveryTracker: a producer's events in flight, counted per route
// version, from which the watch connection derives the exact
// drained_version it ACKs (SPEC §5, switch barrier); the port of
// client/include/bucketmap/delivery_tracker.h.
//
//   drained_version = the highest v such that every event this producer
//   routed under a version below v has its final delivery report
//                   = the lowest route version still in flight, or the
//   applied version when nothing is in flight.
//
// Use (examples/producer.ts is a complete producer):
//   const tracker = new DeliveryTracker(client);
//   new WatchConnection(client, { deliveryTracker: tracker });
//   // per event: count it, then read the route (same view)
//   const { view, ticket } = tracker.current();
//   ... route with view, stamp the header with ticket.version ...
//   producer.send(...).finally(() => tracker.done(ticket));
// Every event counted must be done() once its send settles (delivered or
// failed), or when it is never handed to Kafka. A failed send is final: a
// retry is a new event with a new ticket, routed anew.
//
// Why begin() comes first: the count must exist before the route is read,
// so that no ACK can claim "nothing below v in flight" between reading a
// route at v-1 and counting it. In one Node isolate the two happen in one
// synchronous step anyway; the order keeps the contract the C++ library
// states, for code that awaits between them.

import type { Client, MappingView } from './client';
import type { Route, TeamId } from './model';

/** One event in flight. */
export class Ticket {
  /** @internal */
  settled = false;
  constructor(
    /** The route version the event was counted under. */
    public version: number,
  ) {}
}

export class DeliveryTracker {
  private readonly client: Client;
  // Events in flight per version, and the versions ascending.
  private readonly counts = new Map<number, number>();
  private versions: number[] = [];
  private inFlightCount = 0;
  // done() signals when it empties a version below this; -Infinity:
  // nothing to report.
  private signalBelow = -Infinity;
  private readonly listeners = new Set<() => void>();
  private signalQueued = false;

  constructor(client: Client) {
    this.client = client;
  }

  /** Counts one event and routes `teamId`; the ticket carries the route's version. */
  route(teamId: TeamId): { route: Route; ticket: Ticket } {
    const ticket = this.begin();
    const route = this.client.route(teamId);
    this.rebind(ticket, route.version);
    return { route, ticket };
  }

  /**
   * Counts one event and takes the current view (for the topic name with
   * the route); the ticket carries the view's version. view is null before
   * any mapping (the ticket is still counted).
   */
  current(): { view: MappingView | null; ticket: Ticket } {
    const ticket = this.begin();
    const view = this.client.current();
    if (view !== null) this.rebind(ticket, view.version);
    return { view, ticket };
  }

  /** Counts one event under the client's version now. */
  begin(): Ticket {
    const version = this.client.version;
    this.add(version, 1);
    ++this.inFlightCount;
    return new Ticket(version);
  }

  /** Moves a ticket to the version of the route actually used (never lower). */
  rebind(ticket: Ticket, routeVersion: number): void {
    if (ticket.settled || routeVersion <= ticket.version) return;
    this.add(routeVersion, 1);
    this.add(ticket.version, -1);
    ticket.version = routeVersion;
  }

  /**
   * The event's final delivery report arrived (delivered or failed), or it
   * was never handed to Kafka. A second call for one ticket is ignored.
   */
  done(ticket: Ticket): void {
    if (ticket.settled) return;
    ticket.settled = true;
    --this.inFlightCount;
    const emptied = this.add(ticket.version, -1);
    // Only the last event of a version below the reported applied version
    // can move drained_version past what was reported.
    if (emptied && ticket.version < this.signalBelow) this.signal();
  }

  /** Settles the ticket when `send` settles; returns `send`. */
  track<T>(ticket: Ticket, send: Promise<T>): Promise<T> {
    return send.finally(() => this.done(ticket));
  }

  /** min(appliedVersion, the lowest version still in flight). */
  drainedVersion(appliedVersion: number): number {
    return this.versions.length > 0 ? Math.min(appliedVersion, this.versions[0]) : appliedVersion;
  }

  /** Events counted and not yet done. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  // ---- For the watch connection ----

  /** Records what was last ACKed, so done() signals only when it can matter. */
  setReported(drainedVersion: number, appliedVersion: number): void {
    this.signalBelow = drainedVersion < appliedVersion ? appliedVersion : -Infinity;
    // A done() between the ACK's drainedVersion() and now saw the old
    // threshold: look once more.
    if (drainedVersion < appliedVersion) this.signal();
  }

  /** Calls `listener` (coalesced, on a later tick) when drained_version may have advanced. */
  onProgress(listener: () => void): void {
    this.listeners.add(listener);
  }

  offProgress(listener: () => void): void {
    this.listeners.delete(listener);
  }

  private signal(): void {
    if (this.signalQueued) return;
    this.signalQueued = true;
    setImmediate(() => {
      this.signalQueued = false;
      for (const l of [...this.listeners]) l();
    });
  }

  // Adds n to a version's count; true when the version emptied.
  private add(version: number, n: number): boolean {
    const c = (this.counts.get(version) ?? 0) + n;
    if (c > 0) {
      if (!this.counts.has(version)) {
        this.counts.set(version, c);
        let i = this.versions.length;
        while (i > 0 && this.versions[i - 1] > version) --i;
        this.versions.splice(i, 0, version);
      } else {
        this.counts.set(version, c);
      }
      return false;
    }
    if (!this.counts.has(version)) return false;
    this.counts.delete(version);
    this.versions = this.versions.filter((v) => v !== version);
    return true;
  }
}
