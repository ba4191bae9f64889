// An example consumer with kafkajs, following docs/handoff.md rules 5 and
// 6: it consumes its bucket's topic in a consumer group, resolves (and so
// commits) an event's offset only after processing it, and holds a moving
// team's events through KafkaPartitionHold: an event of a team that an
// open, ordered handoff is moving into this bucket (or stamped with a
// version this consumer has not applied yet) pauses its partition at that
// offset until the source has drained. It keeps serving teams whose
// handoff away from its bucket is still open.
//
//   node dist/examples/consumer.js --server HOST:PORT --brokers HOST:PORT --bucket 2 --topic T --group G
//
// tests: test/server/handoff.test.ts.
import { Consumer, EachBatchPayload, Kafka, KafkaMessage, logLevel } from 'kafkajs';
import { Client, ClientRole, KafkaPartitionHold, WatchConnection } from '../src';

export interface ExampleConsumerOptions {
  servers: string[];
  brokers: string[];
  clientId: string;
  bucketId: number;
  topic: string;
  groupId: string;
  /** Called for each event processed (in order per partition). */
  onEvent: (team: number, message: KafkaMessage) => void | Promise<void>;
}

export class ExampleConsumer {
  readonly client: Client;
  readonly hold: KafkaPartitionHold;
  private readonly watch: WatchConnection;
  private readonly consumer: Consumer;
  private assignedNow = false;
  processed = 0;

  constructor(private readonly options: ExampleConsumerOptions) {
    this.client = new Client({ addresses: options.servers, clientId: options.clientId, role: ClientRole.CONSUMER });
    this.watch = new WatchConnection(this.client, { initialBackoffMs: 50, maxBackoffMs: 1000 });
    const kafka = new Kafka({ clientId: options.clientId, brokers: options.brokers, logLevel: logLevel.ERROR });
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: 10000,
      heartbeatInterval: 500,
      rebalanceTimeout: 10000,
      maxWaitTimeInMs: 100,
    });
    this.hold = new KafkaPartitionHold(this.consumer, this.client);
    // A rebalance: forget the partitions this member no longer has.
    this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
      const assigned = e.payload.memberAssignment[options.topic] ?? [];
      this.assignedNow = assigned.length > 0;
      this.hold.forget(options.topic, [...Array(1024).keys()].filter((p) => !assigned.includes(p)));
    });
  }

  /** True once the group gave this member partitions. */
  get assigned(): boolean {
    return this.assignedNow;
  }

  async start(): Promise<void> {
    await this.watch.start();
    if (!(await this.client.waitForVersion(1, 30000))) throw new Error('no mapping after 30 s');
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.options.topic, fromBeginning: true });
    await this.consumer.run({
      // Rule 6: an offset is resolved, so committed, only once processed.
      eachBatchAutoResolve: false,
      autoCommitInterval: 100,
      eachBatch: (payload) => this.eachBatch(payload),
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect(); // commits what was resolved
    this.hold.close();
    await this.watch.stop();
  }

  private async eachBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    for (const message of batch.messages) {
      if (!isRunning() || isStale()) break;
      const team = Number(message.key?.toString());
      // Held (the partition is now paused at this message) or skipped:
      // stop here; nothing after it is resolved.
      if (this.hold.admit(batch.topic, batch.partition, message, team, this.options.bucketId) !== 'process') break;
      await this.options.onEvent(team, message);
      ++this.processed;
      resolveOffset(message.offset);
      await heartbeat();
    }
  }
}

if (require.main === module) {
  const arg = (name: string): string => {
    const i = process.argv.indexOf(`--${name}`);
    if (i < 0 || i + 1 >= process.argv.length) throw new Error(`--${name} is required`);
    return process.argv[i + 1];
  };
  const c = new ExampleConsumer({
    servers: arg('server').split(','),
    brokers: arg('brokers').split(','),
    clientId: `example-consumer-${process.pid}`,
    bucketId: Number(arg('bucket')),
    topic: arg('topic'),
    groupId: arg('group'),
    onEvent: (team, m) => console.log(`team ${team}: ${m.value?.toString()} (offset ${m.offset})`),
  });
  c.start().catch((e) => {
    console.error(e);
    process.exit(1);
  });
  process.once('SIGINT', () => void c.stop().then(() => process.exit(0)));
}
