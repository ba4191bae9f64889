// LoadReporter: what this client saw per team during one report window,
// sent on the watch stream as WatchRequest.load (SPEC §9, "Load";
// proto/bucketmap/v1/mapping.proto, LoadReport).
//
// Producers count the events they routed per team (recordEvents), consumers
// the time they spent processing per team (recordProcessing). At the end of
// each window the reporter sends one report: the top teams (at most topK,
// 1,000 by default; ranked by processing time, then events) as parallel
// columns ascending by team id, everything else summed in other_*. The
// counts then start over. A window that ends while no stream is synced is
// dropped (its counts are lost, never sent late as a longer window).
//
// Memory is bounded: at most maxTeams teams are counted one by one per
// window (100,000 by default); events of further teams go to other_*.
//
// OFF by default: WatchConnectionOptions.loadReporter must be set. The
// server folds the reports of every client into per-team and per-bucket
// rates (GetLoad, docs/autoscaling.md); servers older than issue 11 end
// the stream with INVALID_ARGUMENT instead.

import Long from 'long';
import type { TeamId } from './model';
import { normalizeTeamId, validTeamId } from './model';

export interface LoadReporterOptions {
  /** Window length; 1,000..600,000 ms. Default 10,000. */
  windowMs?: number;
  /** Teams listed per report; 1..1,000. Default 1,000. */
  topK?: number;
  /** Teams counted one by one per window. Default 100,000. */
  maxTeams?: number;
  /** Milliseconds; default Date.now. */
  clock?: () => number;
}

/** The wire form of one report (WatchRequest.LoadReport). */
export interface LoadReportMsg {
  window_ms: number;
  team_ids: Array<number | Long>;
  events: number[];
  processing_us: number[];
  other_events: number;
  other_processing_us: number;
}

export const MIN_WINDOW_MS = 1000;
export const MAX_WINDOW_MS = 600000;
export const MAX_TOP_K = 1000;

interface Counts {
  events: number;
  processingUs: number;
}

export class LoadReporter {
  readonly windowMs: number;
  readonly topK: number;
  readonly maxTeams: number;
  private readonly clock: () => number;
  private counts = new Map<TeamId, Counts>();
  private otherEvents = 0;
  private otherProcessingUs = 0;
  private windowStart: number;
  private sink: ((report: LoadReportMsg) => boolean) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private sentCount = 0;
  private droppedCount = 0;

  constructor(options: LoadReporterOptions = {}) {
    this.windowMs = options.windowMs ?? 10000;
    this.topK = options.topK ?? MAX_TOP_K;
    this.maxTeams = options.maxTeams ?? 100000;
    if (!(this.windowMs >= MIN_WINDOW_MS && this.windowMs <= MAX_WINDOW_MS)) {
      throw new RangeError(`windowMs: ${this.windowMs} is outside ${MIN_WINDOW_MS}..${MAX_WINDOW_MS}`);
    }
    if (!(this.topK >= 1 && this.topK <= MAX_TOP_K)) throw new RangeError(`topK: ${this.topK} is outside 1..${MAX_TOP_K}`);
    this.clock = options.clock ?? Date.now;
    this.windowStart = this.clock();
  }

  /** Counts `n` events routed for `teamId` (producers). */
  recordEvents(teamId: TeamId, n = 1): void {
    const c = this.countsOf(teamId);
    if (c === null) this.otherEvents += n;
    else c.events += n;
  }

  /** Counts `micros` of processing time for `teamId` (consumers). */
  recordProcessing(teamId: TeamId, micros: number): void {
    const us = Math.max(0, Math.round(micros));
    const c = this.countsOf(teamId);
    if (c === null) this.otherProcessingUs += us;
    else c.processingUs += us;
  }

  /** Reports sent and windows dropped (no stream) so far. */
  get sent(): number {
    return this.sentCount;
  }
  get dropped(): number {
    return this.droppedCount;
  }

  /**
   * Ends the current window: builds its report, starts a new window, and
   * returns the report (null when the window counted nothing).
   */
  endWindow(): LoadReportMsg | null {
    const now = this.clock();
    const elapsed = now - this.windowStart;
    this.windowStart = now;
    const counts = this.counts;
    const otherEvents = this.otherEvents;
    const otherProcessingUs = this.otherProcessingUs;
    this.counts = new Map();
    this.otherEvents = 0;
    this.otherProcessingUs = 0;
    if (counts.size === 0 && otherEvents === 0 && otherProcessingUs === 0) return null;

    const ranked = [...counts.entries()].sort(
      (a, b) => b[1].processingUs - a[1].processingUs || b[1].events - a[1].events || cmp(a[0], b[0]),
    );
    const top = ranked.slice(0, this.topK).sort((a, b) => cmp(a[0], b[0]));
    const report: LoadReportMsg = {
      window_ms: Math.min(MAX_WINDOW_MS, Math.max(MIN_WINDOW_MS, Math.round(elapsed))),
      team_ids: top.map(([t]) => (typeof t === 'bigint' ? Long.fromString(t.toString()) : t)),
      events: [],
      processing_us: [],
      other_events: otherEvents,
      other_processing_us: otherProcessingUs,
    };
    let anyEvents = otherEvents > 0;
    let anyProcessing = otherProcessingUs > 0;
    for (const [, c] of counts) {
      anyEvents = anyEvents || c.events > 0;
      anyProcessing = anyProcessing || c.processingUs > 0;
    }
    if (anyEvents) report.events = top.map(([, c]) => c.events);
    if (anyProcessing) report.processing_us = top.map(([, c]) => c.processingUs);
    for (const [, c] of ranked.slice(this.topK)) {
      report.other_events += c.events;
      report.other_processing_us += c.processingUs;
    }
    return report;
  }

  /**
   * Sends one report per window through `sink` (the watch connection's),
   * which returns false when no stream can take it.
   */
  attach(sink: (report: LoadReportMsg) => boolean): void {
    this.detach();
    this.sink = sink;
    this.windowStart = this.clock();
    this.counts = new Map();
    this.timer = setInterval(() => this.tick(), this.windowMs);
    this.timer.unref();
  }

  detach(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.sink = null;
  }

  /** Ends the window and sends its report (the timer calls it). */
  tick(): void {
    const report = this.endWindow();
    if (report === null || this.sink === null) return;
    if (this.sink(report)) ++this.sentCount;
    else ++this.droppedCount;
  }

  private countsOf(teamId: TeamId): Counts | null {
    if (!validTeamId(teamId)) return null;
    const team = normalizeTeamId(teamId);
    let c = this.counts.get(team);
    if (c === undefined) {
      if (this.counts.size >= this.maxTeams) return null;
      c = { events: 0, processingUs: 0 };
      this.counts.set(team, c);
    }
    return c;
  }
}

function cmp(a: TeamId, b: TeamId): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'number') return -1;
  if (typeof b === 'number') return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}
