// An example producer with kafkajs, following docs/handoff.md: every event
// is routed through the delivery tracker (counted before its route is
// read), sent to its bucket's topic keyed by team with its route version
// in the `bucketmap-version` header, and its ticket is given back when the
// send settles, so the watch stream's ACKs carry the exact drained_version
// that a handoff's switch barrier waits for. It sends one batch at a time
// with one request in flight (and is idempotent unless told otherwise), so
// a team's events stay in order.
//
//   node dist/examples/producer.js --server HOST:PORT --brokers HOST:PORT --teams 1-50
//
// Each event's value is "team:seq". tests: test/server/handoff.test.ts.
import { Kafka, Message, Producer, logLevel } from 'kafkajs';
import { Client, ClientRole, DeliveryTracker, WatchConnection, versionHeaders } from '../src';
import type { Ticket } from '../src';

export interface ExampleProducerOptions {
  servers: string[];
  brokers: string[];
  clientId: string;
  teams: number[];
  /** The role whose topic events go to. Default "ingestion". */
  role?: string;
  /** Pause between rounds (one event per team per round). Default 20 ms. */
  roundMs?: number;
  cachePath?: string;
  /**
   * kafkajs's idempotent producer (default true). librdkafka's mock
   * cluster, which the tests use, reports no controller broker, and
   * kafkajs looks its producer id up there: the tests turn it off. Order
   * per team does not depend on it here: one batch is in flight at a time.
   */
  idempotent?: boolean;
}

export class ExampleProducer {
  readonly client: Client;
  readonly tracker: DeliveryTracker;
  private readonly watch: WatchConnection;
  private readonly producer: Producer;
  private readonly nextSeq = new Map<number, number>();
  private running = false;
  private loop: Promise<void> | null = null;
  unroutable = 0;
  failedSends = 0;

  constructor(private readonly options: ExampleProducerOptions) {
    this.client = new Client({
      addresses: options.servers,
      clientId: options.clientId,
      role: ClientRole.PRODUCER,
      cachePath: options.cachePath,
    });
    this.tracker = new DeliveryTracker(this.client);
    this.watch = new WatchConnection(this.client, { deliveryTracker: this.tracker, initialBackoffMs: 50, maxBackoffMs: 1000 });
    const kafka = new Kafka({ clientId: options.clientId, brokers: options.brokers, logLevel: logLevel.ERROR });
    this.producer = kafka.producer({ idempotent: options.idempotent ?? true, maxInFlightRequests: 1 });
    for (const t of options.teams) this.nextSeq.set(t, 0);
  }

  async start(): Promise<void> {
    await this.producer.connect();
    await this.watch.start();
    if (!(await this.client.waitForVersion(1, 30000))) throw new Error('no mapping after 30 s');
    this.running = true;
    this.loop = this.run();
  }

  /** Stops producing; resolves once every send has settled. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    await this.producer.disconnect();
    await this.watch.stop();
  }

  /** Events produced per team (seq 0..n-1). */
  produced(): ReadonlyMap<number, number> {
    return this.nextSeq;
  }

  private async run(): Promise<void> {
    const role = this.options.role ?? 'ingestion';
    while (this.running) {
      const byTopic = new Map<string, Message[]>();
      const tickets: Ticket[] = [];
      const sent: number[] = [];
      for (const [team, seq] of this.nextSeq) {
        // Count the event, then read its route from the same view.
        const { view, ticket } = this.tracker.current();
        const route = view === null ? null : view.route(team);
        const topic = route !== null && route.routable ? view!.topic(route.bucketId, role) : undefined;
        if (route === null || topic === undefined) {
          this.tracker.done(ticket);
          ++this.unroutable;
          continue;
        }
        let messages = byTopic.get(topic);
        if (messages === undefined) byTopic.set(topic, (messages = []));
        messages.push({ key: String(team), value: `${team}:${seq}`, headers: versionHeaders(route) });
        tickets.push(ticket);
        sent.push(team);
      }
      if (tickets.length > 0) {
        const send = this.producer.sendBatch({
          topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
        });
        try {
          // Every ticket is given back whether the send succeeds or fails.
          await Promise.all(tickets.map((t) => this.tracker.track(t, send)));
          for (const team of sent) this.nextSeq.set(team, this.nextSeq.get(team)! + 1);
        } catch (e) {
          // The same seqs are sent again next round, routed anew.
          ++this.failedSends;
          this.client.logger.warn(`example producer: send failed: ${(e as Error).message}`);
        }
      }
      await new Promise((r) => setTimeout(r, this.options.roundMs ?? 20));
    }
  }
}

function parseTeams(spec: string): number[] {
  const [a, b] = spec.split('-').map(Number);
  return Array.from({ length: (b ?? a) - a + 1 }, (_, i) => a + i);
}

if (require.main === module) {
  const arg = (name: string, def?: string): string => {
    const i = process.argv.indexOf(`--${name}`);
    if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
    if (def === undefined) throw new Error(`--${name} is required`);
    return def;
  };
  const p = new ExampleProducer({
    servers: arg('server').split(','),
    brokers: arg('brokers').split(','),
    clientId: arg('client-id', `example-producer-${process.pid}`),
    teams: parseTeams(arg('teams', '1-10')),
  });
  p.start().then(
    () => process.once('SIGINT', () => void p.stop().then(() => process.exit(0))),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
