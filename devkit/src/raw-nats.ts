/**
 * A NATS client that writes the protocol by hand, for tests that must send
 * what nats.js refuses to: header blocks that do not parse, replies to
 * subjects it guessed. Only what the tests need: CONNECT, PUB/HPUB, SUB and
 * the MSG/HMSG it receives.
 */
import { connect, type Socket } from 'node:net';

export interface RawMessage {
  subject: string;
  reply: string | undefined;
  /** The header block as sent (empty for MSG). */
  headers: string;
  payload: Buffer;
}

export interface RawNats {
  /** PUB (no headers) or HPUB with `headerBlock` written exactly as given, e.g. 'NATS/1.0\r\nBad Name: x\r\n\r\n'. */
  publish(subject: string, payload: Uint8Array | string, opts?: { reply?: string; headerBlock?: string }): void;
  subscribe(subject: string, onMessage: (m: RawMessage) => void, queue?: string): void;
  /** Round trip to the server: everything written before it has been processed. */
  flush(): Promise<void>;
  /** -ERR lines the server sent (permission violations, say). */
  readonly errors: string[];
  close(): void;
}

/**
 * Connects to `url` (nats://host:port) with optional user and password.
 * @example const raw = await connectRaw(ns.url); raw.publish('a', 'x', { headerBlock: 'NATS/1.0\r\nBad Name: 1\r\n\r\n' });
 */
export async function connectRaw(url: string, auth: { user?: string; pass?: string } = {}): Promise<RawNats> {
  const { hostname, port } = new URL(url);
  const socket: Socket = connect(Number(port), hostname);
  let buffer = Buffer.alloc(0);
  const handlers = new Map<number, (m: RawMessage) => void>();
  const pongs: Array<() => void> = [];
  const errors: string[] = [];
  let sid = 0;
  let ready: () => void;
  let failed: (err: Error) => void;
  const connected = new Promise<void>((resolve, reject) => {
    ready = resolve;
    failed = reject;
  });
  socket.on('error', (err) => failed(err));

  const parse = (): void => {
    for (;;) {
      const eol = buffer.indexOf('\r\n');
      if (eol < 0) return;
      const line = buffer.subarray(0, eol).toString('latin1');
      const [op, ...args] = line.split(' ');
      if (op === 'MSG' || op === 'HMSG') {
        const headerLength = op === 'HMSG' ? Number(args[args.length - 2]) : 0;
        const total = Number(args[args.length - 1]);
        if (buffer.length < eol + 2 + total + 2) return;
        const body = buffer.subarray(eol + 2, eol + 2 + total);
        const reply = args.length === (op === 'HMSG' ? 5 : 4) ? args[2] : undefined;
        handlers.get(Number(args[1]))?.({ subject: args[0]!, reply, headers: body.subarray(0, headerLength).toString('latin1'), payload: Buffer.from(body.subarray(headerLength)) });
        buffer = buffer.subarray(eol + 2 + total + 2);
        continue;
      }
      buffer = buffer.subarray(eol + 2);
      if (op === 'INFO') {
        const connectArgs = { verbose: false, pedantic: false, headers: true, no_responders: true, protocol: 1, lang: 'raw', version: '0', ...(auth.user ? { user: auth.user, pass: auth.pass } : {}) };
        socket.write(`CONNECT ${JSON.stringify(connectArgs)}\r\nPING\r\n`);
      } else if (op === 'PONG') {
        const p = pongs.shift();
        if (p) p();
        else ready();
      } else if (op === 'PING') socket.write('PONG\r\n');
      else if (op === '-ERR') {
        errors.push(line);
        failed(new Error(line));
      }
    }
  };
  socket.on('data', (d: Buffer) => {
    buffer = Buffer.concat([buffer, d]);
    parse();
  });
  await connected;
  return {
    errors,
    publish(subject, payload, opts = {}) {
      const data = typeof payload === 'string' ? Buffer.from(payload) : Buffer.from(payload);
      const reply = opts.reply ? ` ${opts.reply}` : '';
      if (opts.headerBlock === undefined) {
        socket.write(Buffer.concat([Buffer.from(`PUB ${subject}${reply} ${data.length}\r\n`), data, Buffer.from('\r\n')]));
      } else {
        const h = Buffer.from(opts.headerBlock, 'latin1');
        socket.write(Buffer.concat([Buffer.from(`HPUB ${subject}${reply} ${h.length} ${h.length + data.length}\r\n`), h, data, Buffer.from('\r\n')]));
      }
    },
    subscribe(subject, onMessage, queue) {
      handlers.set(++sid, onMessage);
      socket.write(`SUB ${subject}${queue ? ` ${queue}` : ''} ${sid}\r\n`);
    },
    flush() {
      return new Promise<void>((resolve) => {
        pongs.push(resolve);
        socket.write('PING\r\n');
      });
    },
    close() {
      socket.destroy();
    },
  };
}
