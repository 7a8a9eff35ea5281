import { readFileSync } from 'node:fs';
/**
 * Test scaffolding: a real nats-server, a gateway in this process with its
 * logs captured, a plain NATS connection for hand-written responders, and a
 * raw-socket HTTP client for framing tests fetch cannot express.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { connect, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { connectRaw, startNatsServer, type NatsServer, type NatsServerOptions } from '@natsgw/devkit';
import { decodeRequest, encodeReply, type ReplyEnvelope, type RequestEnvelope } from '@natsgw/service-sdk/protocol';
import { serve, type RequestListener, type ServeOptions, type Service } from '@natsgw/service-sdk';
import { loadConfig } from '../src/config.js';
import { startGateway, type Gateway } from '../src/gateway.js';
import { createLogger } from '../src/log.js';

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface Stack {
  ns: NatsServer;
  gw: Gateway;
  nc: NatsConnection;
  base: string;
  logs: LogLine[];
  /** Registers something to drain when the stack closes, even after a failed assertion. */
  track<T extends { drain(): Promise<void> }>(thing: T): T;
  /** serve() from the SDK, drained when the stack closes. */
  serve(handler: RequestListener, options: ServeOptions): Promise<Service>;
  close(): Promise<void>;
}

/** The last `n` log lines, for a failure message that says what the gateway was doing. */
export function logTail(logs: LogLine[], n = 5): string {
  return logs
    .slice(-n)
    .map((l) => JSON.stringify(l))
    .join(' ');
}

/** A debug logger whose lines land in `logs` (a write may carry several lines: they are batched per turn). */
export function captureLogger(logs: LogLine[]): ReturnType<typeof createLogger> {
  return createLogger('debug', 'json', {
    write: (chunk: string) => {
      for (const line of chunk.split('\n')) if (line !== '') logs.push(JSON.parse(line) as LogLine);
    },
  });
}

/** Starts a gateway for `flags` with its own logger capturing lines. */
export async function startTestGateway(flags: Record<string, unknown>, logs: LogLine[] = []): Promise<{ gw: Gateway; logs: LogLine[]; base: string }> {
  const logger = captureLogger(logs);
  const gw = await startGateway(loadConfig({ flags: { port: 0, host: '127.0.0.1', adminPort: 0, ...flags } }), { logger });
  return { gw, logs, base: `http://127.0.0.1:${gw.port}` };
}

/** nats-server + gateway (connected) + a client connection. */
export async function startStack(flags: Record<string, unknown> = {}, natsOptions: NatsServerOptions = {}): Promise<Stack> {
  const ns = await startNatsServer(natsOptions);
  const { gw, logs, base } = await startTestGateway({ nats: ns.url, ...flags });
  // (The gateway retries its first connect for ever: a test must fail instead, saying so.)
  let timer: NodeJS.Timeout | undefined;
  const giveUp = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('no connection within 15 s')), 15_000);
  });
  try {
    await Promise.race([gw.connected, giveUp]);
  } catch (err) {
    await gw.close(0);
    await ns.dispose();
    throw new Error(`the gateway did not connect to ${ns.url}: ${(err as Error).message}; its log: ${logTail(logs)}`);
  } finally {
    clearTimeout(timer);
  }
  // A test's first put must not race the gateway creating the routes bucket
  // (see putRoute in backends.ts).
  if (natsOptions.jetstream !== false) await eventually(() => gw.overrides.state === 'watching', 10_000, 'the gateway watches the routes bucket');
  const nc = await connect({ servers: ns.url });
  const tracked: Array<{ drain(): Promise<void> }> = [];
  return {
    ns,
    gw,
    nc,
    base,
    logs,
    track(thing) {
      tracked.push(thing);
      return thing;
    },
    async serve(handler, options) {
      const service = await serve(handler, options);
      tracked.push(service);
      return service;
    },
    async close() {
      await Promise.all(tracked.map((t) => t.drain().catch(() => undefined)));
      await gw.close(1000);
      await nc.close().catch(() => undefined);
      await ns.dispose();
    },
  };
}

/** Subscribes a hand-written responder; `reply` may return an envelope, raw bytes, or nothing (no answer). */
export async function respond(
  nc: NatsConnection,
  subject: string,
  reply: (req: RequestEnvelope, msg: Msg) => Partial<ReplyEnvelope> | Uint8Array | undefined | Promise<Partial<ReplyEnvelope> | Uint8Array | undefined>,
): Promise<Subscription> {
  const sub = nc.subscribe(subject, {
    callback: (_err, msg) => {
      void (async () => {
        const r = await reply(decodeRequest(msg.data), msg);
        if (r === undefined) return;
        msg.respond(r instanceof Uint8Array ? r : encodeReply({ v: 1, status: 200, headers: [], body: Buffer.alloc(0), ...r }));
      })();
    },
  });
  await nc.flush();
  return sub;
}

/** Echoes the request envelope back as JSON (body as text). */
export function echo(req: RequestEnvelope): Partial<ReplyEnvelope> {
  return {
    status: 200,
    headers: ['content-type', 'application/json'],
    body: Buffer.from(JSON.stringify({ ...req, body: Buffer.from(req.body).toString('utf8') })),
  };
}

export interface RawResult {
  /** Everything received, as latin1 text. */
  text: string;
  /** The server closed the connection. */
  closed: boolean;
}

/**
 * Writes raw bytes to the gateway and collects what comes back until the
 * server closes the connection or nothing arrives for `idleMs`.
 */
export function rawRequest(port: number, data: string | Buffer, idleMs = 300): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1');
    let text = '';
    let timer: NodeJS.Timeout;
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed });
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => done(false), idleMs);
    };
    socket.on('data', (d) => {
      text += d.toString('latin1');
      arm();
    });
    socket.on('end', () => done(true));
    socket.on('close', () => done(true));
    socket.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? done(true) : reject(err)));
    socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
    arm();
  });
}

/**
 * One keep-alive connection driven by hand: send a request, read exactly one
 * response (Content-Length framed, or bodyless when told), repeat.
 */
export class RawSession {
  private buffer = '';
  private waiter: (() => void) | undefined;
  closed = false;
  private readonly socket;

  constructor(port: number, localAddress?: string) {
    this.socket = netConnect({ port, host: '127.0.0.1', ...(localAddress ? { localAddress } : {}) });
    this.socket.on('data', (d) => {
      this.buffer += d.toString('latin1');
      this.waiter?.();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    this.socket.on('error', () => undefined);
  }

  send(raw: string): void {
    this.socket.write(Buffer.from(raw, 'latin1'));
  }

  /** Reads one response; rejects if the connection closes first or nothing complete arrives in `ms`. */
  async read(bodyless = false, ms = 3000): Promise<{ status: number; headers: Record<string, string[]>; body: string }> {
    const until = Date.now() + ms;
    for (;;) {
      const [first] = parseResponses(this.buffer, () => bodyless);
      if (first !== undefined) {
        const headEnd = this.buffer.indexOf('\r\n\r\n') + 4;
        const len = bodyless ? 0 : Number(first.headers['content-length']?.[0] ?? 0);
        if (this.buffer.length >= headEnd + len) {
          this.buffer = this.buffer.slice(headEnd + len);
          return first;
        }
      }
      if (this.closed) throw new Error(`connection closed; received ${JSON.stringify(this.buffer.slice(0, 200))}`);
      if (Date.now() > until) throw new Error('no complete response in time');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
      this.waiter = undefined;
    }
  }

  /** Whatever arrived and was not read as a response. */
  get unread(): string {
    return this.buffer;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Splits raw HTTP/1.1 text into responses (Content-Length framed, or bodyless). */
export function parseResponses(text: string, bodyless: (status: number, index: number) => boolean = () => false): Array<{ status: number; headers: Record<string, string[]>; body: string }> {
  const out: Array<{ status: number; headers: Record<string, string[]>; body: string }> = [];
  let rest = text;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [statusLine, ...lines] = rest.slice(0, end).split('\r\n');
    const status = Number(statusLine!.split(' ')[1]);
    const headers: Record<string, string[]> = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      const k = l.slice(0, i).toLowerCase();
      (headers[k] ??= []).push(l.slice(i + 1).trim());
    }
    const len = bodyless(status, out.length) ? 0 : Number(headers['content-length']?.[0] ?? 0);
    out.push({ status, headers, body: rest.slice(end + 4, end + 4 + len) });
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

/** Polls `check` until it is true or `ms` pass. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The natsgw command, as the tests run it. */
export const NATSGW_BIN = fileURLToPath(new URL('../../bin/natsgw.js', import.meta.url));

/** Runs `natsgw <args>` without blocking this process (gateways under test live here and must keep answering). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [NATSGW_BIN, ...args], { encoding: 'utf8', timeout: 20_000, env }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

export interface GatewayProcess {
  child: ChildProcessWithoutNullStreams;
  /** Everything it wrote to stdout so far. */
  output(): string;
}

/**
 * Runs `natsgw <args>` as its own process and resolves once its stdout
 * satisfies `ready` (rejects if it exits first).
 */
export function spawnGateway(args: string[], ready: (stdout: string) => boolean, env: NodeJS.ProcessEnv = process.env): Promise<GatewayProcess> {
  const child = spawn(process.execPath, [NATSGW_BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`natsgw exited (${code}) before it was ready:\n${out}`));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (ready(out)) {
        child.off('exit', onExit);
        resolve({ child, output: () => out });
      }
    });
    child.once('exit', onExit);
  });
}

export interface Load {
  /** Calls of `fn` finished so far. */
  readonly done: number;
  /** What `fn` threw, if anything (a worker goes on after a throw). */
  readonly errors: unknown[];
  /** Stops the workers and waits for the calls in progress. */
  stop(): Promise<void>;
}

/**
 * Runs `fn` in a loop on `workers` concurrent workers until stop(), which
 * `t.after` calls too: a failing assertion ends the test at once instead of
 * leaving the loop to run into the test timeout. Bounded by `maxMs` anyway.
 * @example const load = startLoad(t, async () => { const r = await request(url); statuses.push(r.statusCode); await r.body.dump(); });
 */
export function startLoad(t: { after(fn: () => unknown): void }, fn: (worker: number) => Promise<void>, opts: { workers?: number; pauseMs?: number; maxMs?: number } = {}): Load {
  const { workers = 1, pauseMs = 0, maxMs = 60_000 } = opts;
  let running = true;
  let done = 0;
  const errors: unknown[] = [];
  const until = Date.now() + maxMs;
  const loops = Array.from({ length: workers }, async (_, worker) => {
    while (running && Date.now() < until) {
      try {
        await fn(worker);
      } catch (err) {
        errors.push(err);
      }
      done++;
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
    }
  });
  const all = Promise.all(loops).then(() => undefined);
  const load: Load = {
    get done() {
      return done;
    },
    errors,
    stop() {
      running = false;
      return all;
    },
  };
  t.after(() => load.stop());
  return load;
}

/** PROTOCOL.md's text. */
export const protocolDoc = (): string => readFileSync(new URL('../../../service-sdk/PROTOCOL.md', import.meta.url), 'utf8');

/** The NATS header block PROTOCOL.md shows after `NATS/1.0\r\n<firstHeader>` (written with `\r\n` escapes), as the bytes it stands for. */
export function protocolHeaderBlock(firstHeader: string): string {
  const start = protocolDoc().indexOf('```\nNATS/1.0\\r\\n' + firstHeader);
  if (start < 0) throw new Error(`PROTOCOL.md has no header block starting with ${firstHeader}`);
  const line = protocolDoc().slice(start + 4, protocolDoc().indexOf('\n', start + 4));
  return line.replace(/\\r\\n/g, '\r\n');
}

/**
 * A raw NATS client on `stack`'s server that answers every request on
 * `subject` with `payload` and PROTOCOL.md's header block starting with
 * `firstHeader`, byte for byte. Closed when the stack closes.
 */
export async function answerWithProtocolBlock(stack: Stack, subject: string, firstHeader: string, payload: string): Promise<void> {
  const raw = await connectRaw(stack.ns.url);
  stack.track({ drain: async () => raw.close() });
  const block = protocolHeaderBlock(firstHeader);
  raw.subscribe(subject, (m) => raw.publish(m.reply!, payload, { headerBlock: block }));
  await raw.flush();
}
