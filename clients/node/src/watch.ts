// WatchConnection: keeps a Client current over the
// MappingService.WatchMapping stream (docs/protocol.md), the same protocol
// as the C++ WatchConnection (client/include/bucketmap/watch.h).
//
// It connects to the client's addresses in turn, subscribes with the
// client's version and cluster id (so a reconnect resumes with deltas),
// applies every push, writes the cache file when the client has one, and
// only then ACKs; a push that cannot be applied is NACKed and the server
// answers with the snapshot. Pushes are handled one at a time, in order.
//
// It subscribes with ack_mode ACK_REQUESTED, as the C++ library does
// (docs/protocol.md, "ACK modes"): pushes stream without waiting for ACKs,
// and only those the server marks ack_requested are ACKed at once; the
// others are ACKed lazily, coalesced, at the next heartbeat. A server that
// predates ack modes marks no first push: the stream then ACKs every push.
// After a NACK, the pushes already on their way are dropped, unanswered,
// until the snapshot that answers it.
//
// A broken stream is retried with exponential backoff and full jitter; the
// backoff resets once a stream has synced. With a cache file and no
// mapping yet, start() first seeds the client from the file, so it can
// route while no server is reachable.
//
// Producers pass a DeliveryTracker: every ACK then carries the exact
// drained_version, and the last push is ACKed again whenever it advances
// (and, after a SYNC with no push, an ACK of nonce 0 reports it), so the
// server's switch barrier passes as soon as the old events are delivered.
//
// A refused stream (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
// a TLS failure) is logged and retried with the same backoff.

import * as fs from 'fs';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { Client } from './client';
import type { DeliveryTracker } from './delivery_tracker';
import type { LoadReporter } from './load_report';
import { PushMsg, WatchResponseMsg, messageType, toInt } from './proto';

export interface WatchTlsOptions {
  /** Connect with TLS, verifying the server against rootCaFile or the system roots. */
  enabled: boolean;
  rootCaFile?: string;
  /** mTLS: this client's certificate chain and key (PEM). */
  certFile?: string;
  keyFile?: string;
}

export interface WatchConnectionOptions {
  /** Default 100 ms. */
  initialBackoffMs?: number;
  /** Default 10 s. */
  maxBackoffMs?: number;
  /** The largest message accepted; default 64 MiB (a snapshot of 1M teams is ~10 MB). */
  maxMessageSize?: number;
  /** The bucket filter (consumers and observers only). */
  bucketFilter?: number[];
  /** Write the cache file before ACKing each push (when the client has a path). Default true. */
  writeCache?: boolean;
  /** A producer's delivery tracker: ACKs then carry drained_version. */
  deliveryTracker?: DeliveryTracker;
  /**
   * Load reports (SPEC §9): off unless set. The server of this release
   * does not accept them yet (it ends the stream with INVALID_ARGUMENT);
   * set this only against a server that does.
   */
  loadReporter?: LoadReporter;
  /** The bearer token comes from ClientOptions.bearerToken. */
  tls?: WatchTlsOptions;
  /** Random numbers in [0, 1) for the jitter (tests). Default Math.random. */
  random?: () => number;
}

const METHOD = '/bucketmap.v1.MappingService/WatchMapping';

/** The channel credentials for `tls`; reads the files now. */
export function channelCredentials(tls: WatchTlsOptions | undefined): grpc.ChannelCredentials {
  if (tls === undefined || !tls.enabled) return grpc.credentials.createInsecure();
  const read = (file: string, option: string): Buffer => {
    let pem: Buffer;
    try {
      pem = fs.readFileSync(file);
    } catch (e) {
      throw new Error(`${option}: cannot read ${file}: ${(e as Error).message}`);
    }
    if (pem.length === 0) throw new Error(`${option}: ${file} is empty`);
    return pem;
  };
  if (!tls.certFile !== !tls.keyFile) throw new Error('tls.certFile and tls.keyFile: set both or neither');
  const ca = tls.rootCaFile ? read(tls.rootCaFile, 'tls.rootCaFile') : null;
  const key = tls.keyFile ? read(tls.keyFile, 'tls.keyFile') : null;
  const cert = tls.certFile ? read(tls.certFile, 'tls.certFile') : null;
  return grpc.credentials.createSsl(ca, key, cert);
}

interface Stream {
  call: grpc.ClientDuplexStream<object, WatchResponseMsg>;
  // What a re-ACK repeats: the last ACKed push's nonce and applied version
  // (or nonce 0 and our version after a SYNC without a push).
  reporting: boolean;
  ackedNonce: Long;
  ackedApplied: number;
  reportedDrained: number;
  // The last push applied, ACKed or not: a lazy ACK reports it.
  appliedNonce: Long;
  appliedVersion: number;
  // A server that knows ack modes marks the first push of a stream; one
  // that predates them marks none and waits for an ACK of every push.
  firstPush: boolean;
  ackEvery: boolean;
  // After a NACK: pushes are dropped until the snapshot that answers it.
  awaitingSnapshot: boolean;
  done: boolean;
}

export class WatchConnection {
  private readonly client: Client;
  private readonly options: Required<Omit<WatchConnectionOptions, 'deliveryTracker' | 'tls' | 'loadReporter'>> &
    Pick<WatchConnectionOptions, 'deliveryTracker' | 'tls' | 'loadReporter'>;
  private stopping = false;
  private started = false;
  private runLoop: Promise<void> | null = null;
  private stream: Stream | null = null;
  private grpcClient: grpc.Client | null = null;
  private wake: (() => void) | null = null;
  private syncedNow = false;
  private opened = 0;
  private currentAddress = '';
  private readonly WatchRequest = messageType('WatchRequest');
  private readonly WatchResponse = messageType('WatchResponse');

  constructor(client: Client, options: WatchConnectionOptions = {}) {
    this.client = client;
    this.options = {
      initialBackoffMs: options.initialBackoffMs ?? 100,
      maxBackoffMs: options.maxBackoffMs ?? 10_000,
      maxMessageSize: options.maxMessageSize ?? 64 << 20,
      bucketFilter: options.bucketFilter ?? [],
      writeCache: options.writeCache ?? true,
      deliveryTracker: options.deliveryTracker,
      loadReporter: options.loadReporter,
      tls: options.tls,
      random: options.random ?? Math.random,
    };
  }

  /** True while a stream has synced and has not ended since. */
  get synced(): boolean {
    return this.syncedNow;
  }

  /** Streams opened so far, the current one included. */
  get streamsOpened(): number {
    return this.opened;
  }

  /** The address of the current or last stream. */
  get address(): string {
    return this.currentAddress;
  }

  /**
   * Seeds the client from its cache file if it has no mapping, then starts
   * connecting in the background. Resolves once the cache was tried. Call once.
   */
  async start(): Promise<void> {
    if (this.started) throw new Error('WatchConnection.start: called twice');
    this.started = true;
    if (this.client.version === 0 && this.client.options.cachePath) {
      try {
        if (await this.client.loadCache()) {
          this.client.logger.info(
            `bucketmap: routing from the cache file at version ${this.client.version} until a server answers`,
          );
        }
      } catch {
        // loadCache() logged why.
      }
    }
    this.options.loadReporter?.attach((report) => this.sendLoad(report));
    this.runLoop = this.run();
  }

  /** Ends the stream and the reconnect loop; resolves once they have stopped. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.options.loadReporter?.detach();
    this.stream?.call.cancel();
    this.wake?.();
    if (this.runLoop !== null) await this.runLoop;
  }

  private async run(): Promise<void> {
    const addresses = this.client.options.addresses;
    if (addresses.length === 0) {
      this.client.logger.error(`bucketmap: no server addresses; the client stays at version ${this.client.version}`);
      return;
    }
    let backoff = this.options.initialBackoffMs;
    for (let attempt = 0; !this.stopping; ++attempt) {
      const address = addresses[attempt % addresses.length];
      if (await this.runStream(address)) backoff = this.options.initialBackoffMs;
      if (this.stopping) break;
      // Full jitter: a fleet reconnecting after a server restart spreads out.
      const wait = backoff * this.options.random();
      backoff = Math.min(backoff * 2, this.options.maxBackoffMs);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private runStream(address: string): Promise<boolean> {
    let credentials: grpc.ChannelCredentials;
    try {
      credentials = channelCredentials(this.options.tls);
    } catch (e) {
      this.client.logger.warn(`bucketmap: cannot connect to ${address}: ${(e as Error).message}`);
      return Promise.resolve(false);
    }
    const grpcClient = new grpc.Client(address, credentials, {
      'grpc.max_receive_message_length': this.options.maxMessageSize,
      'grpc.max_send_message_length': this.options.maxMessageSize,
      // Notice a dead server within seconds even when no push is due.
      'grpc.keepalive_time_ms': 20000,
      'grpc.keepalive_timeout_ms': 10000,
      'grpc.initial_reconnect_backoff_ms': this.options.initialBackoffMs,
      'grpc.max_reconnect_backoff_ms': this.options.maxBackoffMs,
    });
    this.grpcClient = grpcClient;
    const metadata = new grpc.Metadata();
    if (this.client.options.bearerToken) metadata.set('authorization', `Bearer ${this.client.options.bearerToken}`);
    const call = grpcClient.makeBidiStreamRequest<object, WatchResponseMsg>(
      METHOD,
      (req: object) => Buffer.from(this.WatchRequest.encode(this.WatchRequest.fromObject(req)).finish()),
      (buf: Buffer) => this.WatchResponse.decode(buf) as unknown as WatchResponseMsg,
      metadata,
    );
    this.currentAddress = address;
    ++this.opened;
    const stream: Stream = {
      call,
      reporting: false,
      ackedNonce: Long.UZERO,
      ackedApplied: 0,
      reportedDrained: 0,
      appliedNonce: Long.UZERO,
      appliedVersion: 0,
      firstPush: true,
      ackEvery: false,
      awaitingSnapshot: false,
      done: false,
    };
    this.stream = stream;
    const tracker = this.options.deliveryTracker;
    const onProgress = () => this.reportDrained(stream);
    tracker?.onProgress(onProgress);

    return new Promise<boolean>((resolve) => {
      let synced = false;
      // Responses are handled one at a time, in order: a push's cache write
      // and ACK complete before the next message is looked at.
      let chain: Promise<void> = Promise.resolve();
      const finish = (status: string) => {
        if (stream.done) return;
        stream.done = true;
        this.syncedNow = false;
        tracker?.offProgress(onProgress);
        if (this.stream === stream) this.stream = null;
        call.cancel();
        chain.then(() => {
          grpcClient.close();
          if (!this.stopping) this.client.logger.info(`bucketmap: watch stream to ${address} ended (${status}); reconnecting`);
          resolve(synced);
        });
      };
      call.on('data', (response: WatchResponseMsg) => {
        chain = chain.then(async () => {
          if (stream.done) return;
          try {
            if (response.push) {
              await this.handlePush(stream, response.push);
            } else if (response.sync) {
              this.client.confirmCurrent(toInt(response.sync.version));
              synced = true;
              this.syncedNow = true;
              if (tracker !== undefined && !stream.reporting) {
                // Resumed at the server's version, so no push to ACK: report
                // drained_version anyway (the ACK of "push" 0), or a server
                // that restarted would hold a handoff's barrier until its
                // grace deadline.
                stream.appliedNonce = Long.UZERO;
                stream.appliedVersion = this.client.version;
                this.ackApplied(stream);
              }
            } else if (response.heartbeat) {
              this.client.confirmCurrent(toInt(response.heartbeat.version));
              // The lazy ACK: pushes the server did not ask about are
              // reported here, coalesced, so ListClients catches up in
              // quiet times.
              if (!stream.appliedNonce.isZero() && stream.appliedVersion > stream.ackedApplied) {
                this.ackApplied(stream);
              }
            }
          } catch (e) {
            this.client.logger.warn(`bucketmap: watch stream to ${address}: ${(e as Error).message}`);
            finish(`client error: ${(e as Error).message}`);
          }
        });
      });
      call.on('error', (e: grpc.ServiceError) => finish(`${e.code}: ${e.details ?? e.message}`));
      call.on('end', () => finish('end of stream'));
      this.write(stream, {
        subscribe: {
          client_id: this.client.options.clientId,
          role: this.client.options.role,
          known_version: this.client.version,
          cluster_id: this.client.clusterId,
          bucket_filter: this.options.bucketFilter,
          // Pushes stream; only those the server marks need an ACK at once.
          ack_mode: 'ACK_REQUESTED',
        },
      });
      if (this.stopping) finish('stopping');
    });
  }

  private async handlePush(stream: Stream, push: PushMsg): Promise<void> {
    if (stream.firstPush) stream.ackEvery = !push.ack_requested;
    stream.firstPush = false;
    if (stream.awaitingSnapshot && !push.snapshot) return;
    let error: Error | null = null;
    try {
      if (push.snapshot) this.client.applySnapshot(push.snapshot);
      else this.client.applyDeltas(push.deltas ?? []);
    } catch (e) {
      error = e as Error;
    }
    // Echoed exactly: never through a double.
    const nonce = typeof push.nonce === 'number' ? Long.fromNumber(push.nonce, true) : push.nonce;
    if (error !== null) {
      this.client.logger.warn(
        `bucketmap: push ${toInt(push.from_version)}..${toInt(push.to_version)} not applied: ${error.message}`,
      );
      stream.awaitingSnapshot = true;
      this.write(stream, { nack: { nonce, error: error.message } });
      return;
    }
    stream.awaitingSnapshot = false;
    if (this.options.writeCache && this.client.options.cachePath) {
      // The file must hold the version before the server hears of it.
      try {
        await this.client.writeCache();
      } catch (e) {
        this.client.logger.warn(`bucketmap: cache write failed: ${(e as Error).message}`);
      }
    }
    if (stream.done) return;
    // After the cache write: a version is ACKed once it is on disk, and
    // drained_version never exceeds it. The push took us to to_version.
    stream.appliedNonce = nonce;
    stream.appliedVersion = this.client.version;
    if (stream.ackEvery || push.ack_requested) this.ackApplied(stream);
  }

  // ACKs the last applied push (or, after a SYNC without one, "push" 0).
  private ackApplied(stream: Stream): void {
    const version = stream.appliedVersion;
    const tracker = this.options.deliveryTracker;
    const drained = tracker === undefined ? 0 : tracker.drainedVersion(version);
    stream.reporting = true;
    stream.ackedNonce = stream.appliedNonce;
    stream.ackedApplied = version;
    stream.reportedDrained = drained;
    this.write(stream, { ack: { nonce: stream.appliedNonce, applied_version: version, drained_version: drained } });
    tracker?.setReported(drained, version);
  }

  // Sends the last ACK again when drained_version advanced without a push.
  private reportDrained(stream: Stream): void {
    const tracker = this.options.deliveryTracker;
    if (tracker === undefined || stream.done || !stream.reporting) return;
    const drained = tracker.drainedVersion(stream.ackedApplied);
    if (drained <= stream.reportedDrained) return;
    stream.reportedDrained = drained;
    this.write(stream, {
      ack: { nonce: stream.ackedNonce, applied_version: stream.ackedApplied, drained_version: drained },
    });
    tracker.setReported(drained, stream.ackedApplied);
  }

  private sendLoad(report: object): boolean {
    const stream = this.stream;
    if (stream === null || stream.done || !this.syncedNow) return false;
    this.write(stream, { load: report });
    return true;
  }

  private write(stream: Stream, request: object): void {
    if (stream.done) return;
    stream.call.write(request);
  }
}

