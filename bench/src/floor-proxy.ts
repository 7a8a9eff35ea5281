/**
 * The cheapest proxies one can write on uWebSockets.js, for `npm run bench:floor`:
 * GET/HEAD only, no header rules, no retries, no balancing, no health, no
 * streaming, no timeouts. NOT a product: a floor, to tell what the
 * gateway's features cost from what its parts cost.
 *
 *   FLOOR_CLIENT=undici  undici Pool.dispatch, the client natsgw uses;
 *   FLOOR_CLIENT=net     a raw net.Socket per connection parsed by the llhttp
 *                        binding node:http itself uses (the internal module
 *                        `_http_common`) — what a hand-written client could
 *                        reach at best.
 *
 * argv: upstream port. Prints "port N" once listening.
 */
import { createRequire } from 'node:module';
import net from 'node:net';
import { Pool, type Dispatcher } from 'undici';
import uws from 'uWebSockets.js';

const upstreamPort = Number(process.argv[2]);
const client = process.env.FLOOR_CLIENT ?? 'undici';
const SKIP = new Set(['connection', 'keep-alive', 'content-length', 'transfer-encoding', 'date']);

interface Exchange {
  res: uws.HttpResponse;
  aborted: boolean;
}

function answer(ex: Exchange, status: number, headers: string[], body: Buffer): void {
  if (ex.aborted) return;
  ex.res.cork(() => {
    ex.res.writeStatus(String(status));
    for (let i = 0; i < headers.length; i += 2) if (!SKIP.has(headers[i]!)) ex.res.writeHeader(headers[i]!, headers[i + 1]!);
    ex.res.end(body);
  });
}
function fail(ex: Exchange): void {
  if (!ex.aborted) ex.res.cork(() => ex.res.writeStatus('502 Bad Gateway').end());
}

type Send = (ex: Exchange, method: string, path: string) => void;

function undiciClient(): Send {
  const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: 64 });
  return (ex, method, path) => {
    let status = 0;
    let headers: string[] = [];
    const chunks: Buffer[] = [];
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {}, // its presence tells undici this is a v7-style handler
      onResponseStart(_c, code, h) {
        status = code;
        headers = Object.entries(h).flatMap(([k, v]) => (Array.isArray(v) ? v.flatMap((x) => [k, x]) : [k, String(v)]));
      },
      onResponseData(_c, chunk) {
        chunks.push(chunk);
      },
      onResponseEnd() {
        answer(ex, status, headers, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
      },
      onResponseError() {
        fail(ex);
      },
    };
    pool.dispatch({ origin: `http://127.0.0.1:${upstreamPort}`, method, path, headers: [] }, handler);
  };
}

function netClient(): Send {
  // Node's own llhttp binding; internal, which is why the gateway does not use it.
  // biome-ignore lint/suspicious/noExplicitAny: an internal module with no types; the floor uses a handful of its members.
  const { HTTPParser } = createRequire(import.meta.url)('_http_common') as { HTTPParser: any };
  const kOnHeadersComplete = HTTPParser.kOnHeadersComplete | 0;
  const kOnBody = HTTPParser.kOnBody | 0;
  const kOnMessageComplete = HTTPParser.kOnMessageComplete | 0;
  interface Conn {
    socket: net.Socket;
    ex: Exchange | undefined;
    status: number;
    headers: string[];
    chunks: Buffer[];
  }
  const idle: Conn[] = [];
  const open = (): Conn => {
    const socket = net.connect({ port: upstreamPort, host: '127.0.0.1', noDelay: true });
    const c: Conn = { socket, ex: undefined, status: 0, headers: [], chunks: [] };
    const parser = new HTTPParser();
    parser.initialize(HTTPParser.RESPONSE, {});
    parser[kOnHeadersComplete] = (_maj: number, _min: number, headers: string[], _m: unknown, _u: unknown, status: number) => {
      c.status = status;
      c.headers = headers.map((v, i) => (i % 2 === 0 ? v.toLowerCase() : v));
    };
    parser[kOnBody] = (b: Buffer) => c.chunks.push(Buffer.from(b));
    parser[kOnMessageComplete] = () => {
      const ex = c.ex!;
      c.ex = undefined;
      idle.push(c);
      answer(ex, c.status, c.headers, c.chunks.length === 1 ? c.chunks[0]! : Buffer.concat(c.chunks));
      c.chunks = [];
    };
    socket.on('data', (d) => {
      if (c.ex === undefined || parser.execute(d) instanceof Error) socket.destroy();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      const i = idle.indexOf(c);
      if (i >= 0) idle.splice(i, 1);
      if (c.ex) fail(c.ex);
    });
    return c;
  };
  return (ex, method, path) => {
    const c = idle.pop() ?? open();
    c.ex = ex;
    c.socket.write(`${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1:${upstreamPort}\r\n\r\n`, 'latin1');
  };
}

const send = client === 'net' ? netClient() : undiciClient();
uws
  .App()
  .any('/*', (res, req) => {
    const ex: Exchange = { res, aborted: false };
    res.onAborted(() => (ex.aborted = true));
    send(ex, req.getCaseSensitiveMethod(), req.getUrl());
  })
  .listen('127.0.0.1', 0, (token) => {
    if (!token) process.exit(1);
    process.stdout.write(`port ${uws.us_socket_local_port(token)}\n`);
  });
process.once('SIGTERM', () => process.exit(0));
