/**
 * Real HTTP backends for override tests: node:http servers on loopback that
 * can be stopped (connections killed), restarted on the same port, and told
 * how to answer.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Gateway } from '../src/gateway.js';
import type { RouteRuntime } from '../src/routes/route.js';
import type { RouteTable } from '../src/routes/route-table.js';
import { openRoutesBucket } from '../src/routes/routes-bucket.js';
import { eventually } from './helpers.js';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: Buffer;
}

export type BackendHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

export class Backend {
  readonly requests: SeenRequest[] = [];
  handler: BackendHandler;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;
  /** Connections accepted since start. */
  connectionsOpened = 0;

  constructor(
    readonly name: string,
    handler?: BackendHandler,
  ) {
    this.handler =
      handler ??
      ((req, res) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ backend: this.name, url: req.url }));
      });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get hits(): number {
    return this.requests.length;
  }

  async start(): Promise<this> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        this.requests.push({ method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders, body });
        this.handler(req, res, body);
      });
    });
    server.keepAliveTimeout = 30_000;
    server.on('connection', (s: Socket) => {
      this.connectionsOpened++;
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
    return this;
  }

  /** Kills the backend: stops listening and cuts every connection. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => server.close(r));
  }

  /** Open connections right now. */
  get connections(): number {
    return this.sockets.size;
  }
}

export async function startBackends(n: number, handler?: (b: Backend) => BackendHandler): Promise<Backend[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) => {
      const b = new Backend(`b${i + 1}`);
      if (handler) b.handler = handler(b);
      return b.start();
    }),
  );
}

export function routesBucket(nc: NatsConnection, bucket?: string): Promise<KV> {
  return openRoutesBucket(nc, bucket);
}

/** Writes a route and waits until the gateway has applied (or rejected) that revision. */
export async function putRoute(kv: KV, gw: Gateway, key: string, value: unknown): Promise<number> {
  // A put racing the gateway's creation of the bucket can reach the stream
  // before the server routes its subjects (no responders, reported as
  // "jetstream is not enabled"); once the gateway watches, the stream is whole.
  await eventually(() => gw.overrides.state === 'watching', 10_000, 'the gateway watches the routes bucket');
  const revision = await kv.put(key, typeof value === 'string' ? value : JSON.stringify(value));
  await eventually(() => gw.routes.get(key)?.revision === revision || gw.routes.rejected.get(key)?.revision === revision, 5000, `revision ${revision} of ${key} applied`);
  return revision;
}

export async function deleteRoute(kv: KV, gw: Gateway, key: string): Promise<void> {
  await kv.delete(key);
  await eventually(() => !gw.routes.keys().includes(key), 5000, `${key} removed`);
}

/** The HTTP override that serves `key` (the test fails if it is none, or a raw NATS route). */
export function httpRoute(table: RouteTable, key: string): RouteRuntime {
  const r = table.match(key);
  if (r === undefined || r.kind !== 'http') throw new Error(`${key} is not served by an HTTP override`);
  return r;
}
