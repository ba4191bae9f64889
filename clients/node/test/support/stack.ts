// The real parts the Node client's integration tests run against: the
// bucketmap-server binary (a child process, on free ports, restartable on
// the same port), a fresh database of the PostgreSQL that
// tests/node/run_node_tests.sh started, the Kafka mock helper process, and
// a small admin client. Everything started here dies with the test
// process (helpers watch their stdin; servers are killed on exit).
import * as child_process from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import { messageType } from '../../src/proto';
import { buildBinary } from './paths';

export interface Env {
  serverBinary: string;
  kafkaMock: string;
  cacheTool: string;
  pgPort: number;
  pgBin: string;
}

/** The environment, or the reason it is missing (tests then fail, never skip). */
export function env(): Env {
  const serverBinary = buildBinary('BUCKETMAP_SERVER_BIN', 'server/bucketmap-server');
  const kafkaMock = buildBinary('BUCKETMAP_KAFKA_MOCK', 'tests/support/kafka_mock_helper');
  const cacheTool = buildBinary('BUCKETMAP_CACHE_TOOL', 'tests/node/node_cache_tool');
  const pgPort = Number(process.env.BM_PG_PORT ?? 0);
  const pgBin = process.env.BM_PG_BIN ?? '/usr/lib/postgresql/15/bin';
  const missing = [
    serverBinary ? '' : 'bucketmap-server (BUCKETMAP_SERVER_BIN)',
    kafkaMock ? '' : 'kafka_mock_helper (BUCKETMAP_KAFKA_MOCK)',
    cacheTool ? '' : 'node_cache_tool (BUCKETMAP_CACHE_TOOL)',
    pgPort ? '' : 'PostgreSQL (BM_PG_PORT): run tests/node/run_node_tests.sh',
  ].filter((m) => m !== '');
  if (missing.length > 0) throw new Error(`integration test environment incomplete: ${missing.join('; ')}`);
  return { serverBinary: serverBinary!, kafkaMock: kafkaMock!, cacheTool: cacheTool!, pgPort, pgBin };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 20 ms until it holds; throws with `what` after `timeoutMs`. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

let dbCounter = 0;
const children = new Set<child_process.ChildProcess>();
/**
 * Kills every child process still running. Each test file calls it from
 * after(): a test that fails half-way must not leave a server or helper
 * behind, whose open pipes would keep the test process from exiting.
 */
export function killChildren(): void {
  for (const c of children) c.kill('SIGKILL');
}
process.on('exit', killChildren);

/** A fresh, empty database on the test PostgreSQL; returns its URL. */
export function createDatabase(e: Env): string {
  const name = `node_${process.pid}_${++dbCounter}`;
  child_process.execFileSync(path.join(e.pgBin, 'createdb'), ['-h', '127.0.0.1', '-p', String(e.pgPort), '-U', 'postgres', name]);
  return `postgresql://postgres@127.0.0.1:${e.pgPort}/${name}`;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(process.env.BUCKETMAP_TEST_TMPDIR ?? os.tmpdir(), prefix));
}

/** bucketmap-server as a child process. */
export class ServerProcess {
  readonly port: number;
  readonly address: string;
  readonly log: string;
  private proc: child_process.ChildProcess | null = null;
  // How the readiness probe reaches the server (TLS, token).
  private access: AdminAccess = {};

  private constructor(
    private readonly e: Env,
    private readonly postgresUrl: string,
    private readonly flags: string[],
    port: number,
    log: string,
  ) {
    this.port = port;
    this.address = `127.0.0.1:${port}`;
    this.log = log;
  }

  /**
   * Starts a server on a fresh database (or `postgresUrl`), on a free port
   * (or `port`), and waits until it serves.
   */
  static async start(
    e: Env,
    flags: string[] = [],
    postgresUrl?: string,
    port?: number,
    access: AdminAccess = {},
  ): Promise<ServerProcess> {
    const dir = tempDir('bucketmap-node-server-');
    const s = new ServerProcess(e, postgresUrl ?? createDatabase(e), flags, port ?? (await freePort()), path.join(dir, 'server.log'));
    s.access = access;
    await s.launch();
    return s;
  }

  /** (Re)starts on the same port and waits until GetMapping answers. */
  async launch(): Promise<void> {
    const out = fs.openSync(this.log, 'a');
    const proc = child_process.spawn(
      this.e.serverBinary,
      [
        `--postgres_url=${this.postgresUrl}`,
        `--grpc_listen=${this.address}`,
        `--metrics_listen=127.0.0.1:${await freePort()}`,
        ...this.flags,
      ],
      { stdio: ['ignore', out, out] },
    );
    fs.closeSync(out);
    this.proc = proc;
    children.add(proc);
    proc.on('exit', () => children.delete(proc));

    const admin = new Admin(this.address, this.access);
    try {
      await waitFor(
        `the server on ${this.address} to serve (log: ${this.log})`,
        async () => {
          if (proc.exitCode !== null) throw new Error(`the server exited:\n${this.logTail()}`);
          try {
            await admin.call('MappingService', 'GetMapping', 'GetMappingRequest', 'MappingSnapshot', {}, 1000);
            return true;
          } catch {
            return false;
          }
        },
        60000,
      );
    } finally {
      admin.close();
    }
  }

  /** Sends `signal` and waits for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const proc = this.proc;
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill(signal);
    await exited;
    this.proc = null;
  }

  logTail(lines = 30): string {
    try {
      return fs.readFileSync(this.log, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
}

/** TLS (the CA that signed the server's certificate) and a bearer token. */
export interface AdminAccess {
  caFile?: string;
  token?: string;
}

/** Unary calls to a server's AdminService and MappingService (protobufjs types). */
export class Admin {
  private readonly client: grpc.Client;
  private readonly token: string;

  constructor(address: string, access: AdminAccess = {}) {
    this.token = access.token ?? '';
    const creds = access.caFile
      ? grpc.credentials.createSsl(fs.readFileSync(access.caFile))
      : grpc.credentials.createInsecure();
    this.client = new grpc.Client(address, creds, {
      'grpc.max_receive_message_length': 64 << 20,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    });
  }

  call<T = Record<string, unknown>>(
    service: string,
    method: string,
    requestType: string,
    responseType: string,
    request: object,
    timeoutMs = 10000,
  ): Promise<T> {
    const req = messageType(requestType);
    const resp = messageType(responseType);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        `/bucketmap.v1.${service}/${method}`,
        (r: object) => Buffer.from(req.encode(req.fromObject(r)).finish()),
        (b: Buffer) => resp.toObject(resp.decode(b), { longs: Number, enums: Number, defaults: true, arrays: true }) as T,
        request,
        this.metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, value) => (err ? reject(err) : resolve(value as T)),
      );
    });
  }

  private metadata(): grpc.Metadata {
    const m = new grpc.Metadata();
    if (this.token) m.set('authorization', `Bearer ${this.token}`);
    return m;
  }

  /** CreateBucket; returns the bucket id. */
  async createBucket(name: string, opts: { pool?: string; topic?: string; group?: string; weight?: number } = {}): Promise<number> {
    const bucket: Record<string, unknown> = {
      name,
      pool: opts.pool ?? '',
      weight: opts.weight ?? 0,
      topics: { ingestion: opts.topic ?? `events_${name}` },
      drain_order: ['ingestion'],
    };
    if (opts.group) bucket.consumer_groups = { ingestion: opts.group };
    const r = await this.call<{ bucket: { id: number } }>('AdminService', 'CreateBucket', 'CreateBucketRequest', 'CreateBucketResponse', {
      bucket,
      reason: 'node test',
    });
    return r.bucket.id;
  }

  /** AssignTeam to a bucket (number) or pool (string); returns the version. */
  async assign(team: number, target: number | string, extra: Record<string, unknown> = {}): Promise<number> {
    const req: Record<string, unknown> = { team_id: team, reason: 'node test', ...extra };
    if (typeof target === 'number') req.bucket_id = target;
    else req.pool = target;
    const r = await this.call<{ version: number }>('AdminService', 'AssignTeam', 'AssignTeamRequest', 'AssignTeamResponse', req);
    return r.version;
  }

  async setState(bucketId: number, state: number): Promise<number> {
    const r = await this.call<{ version: number }>('AdminService', 'UpdateBucket', 'UpdateBucketRequest', 'UpdateBucketResponse', {
      bucket: { id: bucketId, state },
      update_mask: { paths: ['state'] },
      reason: 'node test',
    });
    return r.version;
  }

  async getTeam(team: number): Promise<{ bucket_id: number; source: string; version: number }> {
    return this.call('MappingService', 'GetTeam', 'GetTeamRequest', 'TeamRoute', { team_id: team });
  }

  async listHandoffs(includeEnded: boolean): Promise<Array<Record<string, unknown>>> {
    const r = await this.call<{ handoffs: Array<Record<string, unknown>> }>(
      'AdminService',
      'ListHandoffs',
      'ListHandoffsRequest',
      'ListHandoffsResponse',
      { include_ended: includeEnded, page_size: 1000 },
    );
    return r.handoffs;
  }

  async listClients(): Promise<Array<Record<string, unknown>>> {
    const r = await this.call<{ clients: Array<Record<string, unknown>> }>(
      'AdminService',
      'ListClients',
      'ListClientsRequest',
      'ListClientsResponse',
      {},
    );
    return r.clients;
  }

  close(): void {
    this.client.close();
  }
}

/** librdkafka's mock cluster in its helper process, with `topics` created. */
export class KafkaMock {
  private constructor(
    private readonly proc: child_process.ChildProcess,
    readonly bootstrap: string,
  ) {}

  static async start(e: Env, topics: Array<[string, number]>): Promise<KafkaMock> {
    const args = topics.flatMap(([t, p]) => ['--topic', `${t}:${p}`]);
    // stdin is a pipe: the helper exits when this process dies.
    const proc = child_process.spawn(e.kafkaMock, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    children.add(proc);
    proc.on('exit', () => children.delete(proc));

    const bootstrap = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error('kafka_mock_helper printed no BOOTSTRAP in 10 s')), 10000);
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /BOOTSTRAP (\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      proc.once('exit', (code) => reject(new Error(`kafka_mock_helper exited with ${code}`)));
    });
    return new KafkaMock(proc, bootstrap);
  }

  stop(): void {
    this.proc.stdin?.end();
    this.proc.kill('SIGTERM');
  }
}
