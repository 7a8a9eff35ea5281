/**
 * Keeps one hostile message from stopping a nats.js connection's reader.
 *
 * nats.js runs every subscription callback inside its socket parser, its
 * own ones too (the KV watcher's consumer, the request multiplexer). When
 * one throws, the exception ends the loop that reads the socket: the
 * socket stays open, no disconnect is reported, and nothing more arrives
 * until stale-ping detection gives up on the connection, minutes later.
 * Any NATS user can cause that with one message whose header block
 * `MsgHdrsImpl.decode` throws on (a header name with a space or a
 * non-ASCII byte, a bare CR or LF in a value): reading `msg.headers`
 * throws wherever that message is delivered.
 *
 * The guard wraps the connection's message dispatch (the one place every
 * message passes) and:
 * - checks a header block against exactly the rules nats.js's decoder
 *   throws on and, when a line breaks them, drops that line (not the
 *   message: a JetStream consumer that lost a message would be reset to
 *   it and receive it again, forever), reporting it;
 * - catches whatever a callback throws, reports it, and lets the reader
 *   go on.
 * Every callback of ours still contains its own errors with a defined
 * outcome (a 502 for the request it belonged to); the guard is the net
 * under nats.js's own callbacks and anyone else's on a shared connection.
 *
 * This reaches into nats.js internals (`protocol.processMsg`), checked on
 * @nats-io/nats-core 3.4; when they are not there the guard says so
 * (returns false) instead of failing, and a test pins the behaviour.
 */
import type { NatsConnection } from '@nats-io/transport-node';

export interface NatsGuardEvents {
  /** A subscription callback threw; the message it was given is lost, the reader goes on. */
  onCallbackError?(subject: string, error: unknown): void;
  /** A message arrived with header lines nats.js cannot decode; they were dropped. */
  onMalformedHeaders?(subject: string, droppedLines: number): void;
}

interface MsgArg {
  subject: Uint8Array;
  reply?: Uint8Array;
  sid: number;
  hdr: number;
  size: number;
}
type ProcessMsg = (msg: MsgArg, data: Uint8Array) => void;
interface Guarded {
  processMsg: ProcessMsg;
  [kListeners]?: NatsGuardEvents[];
}
const kListeners = Symbol('natsgw.guard');

const CR = 13;
const LF = 10;
const COLON = 58;

/**
 * Installs the guard on `nc` (once per connection; later calls add their
 * listeners). Returns false when this nats.js has no dispatch to wrap.
 * @example guardConnection(nc, { onCallbackError: (subject, err) => log.error({ subject, err }, 'a NATS callback threw') });
 */
export function guardConnection(nc: NatsConnection, events: NatsGuardEvents = {}): boolean {
  const protocol = (nc as unknown as { protocol?: Guarded }).protocol;
  if (protocol === undefined || typeof protocol.processMsg !== 'function') return false;
  const existing = protocol[kListeners];
  if (existing !== undefined) {
    existing.push(events);
    return true;
  }
  const listeners: NatsGuardEvents[] = [events];
  protocol[kListeners] = listeners;
  const original = protocol.processMsg.bind(protocol);
  protocol.processMsg = (msg: MsgArg, data: Uint8Array): void => {
    try {
      if (msg.hdr > 0) {
        const dropped = invalidHeaderLines(data, msg.hdr);
        if (dropped > 0) {
          data = withoutInvalidLines(msg, data);
          for (const l of listeners) l.onMalformedHeaders?.(subjectOf(msg), dropped);
        }
      }
      original(msg, data);
    } catch (error) {
      for (const l of listeners) {
        try {
          l.onCallbackError?.(subjectOf(msg), error);
        } catch {
          // A listener that throws must not undo the guard.
        }
      }
    }
  };
  return true;
}

function subjectOf(msg: MsgArg): string {
  return Buffer.from(msg.subject).toString('latin1');
}

/**
 * Whether the line [start, end) passes `MsgHdrsImpl.decode`: a line with a
 * colon needs a key of bytes 33–126 (any byte from 0x80 decodes to a
 * character above 126) and a value without a lone CR or LF. Lines without a
 * colon, and empty ones, are ignored by the decoder.
 */
function lineIsValid(data: Uint8Array, start: number, end: number): boolean {
  let colon = -1;
  for (let i = start; i < end; i++) {
    if (data[i] === COLON) {
      colon = i;
      break;
    }
  }
  if (colon < 0) return true;
  for (let i = start; i < colon; i++) {
    const c = data[i]!;
    if (c < 33 || c > 126) return false;
  }
  for (let i = colon + 1; i < end; i++) {
    const c = data[i]!;
    if (c === CR || c === LF) return false;
  }
  return true;
}

/** Calls `fn(start, end, isStatusLine)` for each CRLF-ended line of the header block data[0, hdr). */
function eachLine(data: Uint8Array, hdr: number, fn: (start: number, end: number, isStatusLine: boolean) => void): void {
  let lineStart = 0;
  for (let i = 0; i + 1 < hdr; i++) {
    if (data[i] !== CR || data[i + 1] !== LF) continue;
    fn(lineStart, i, lineStart === 0);
    lineStart = i + 2;
    i++;
  }
}

function invalidHeaderLines(data: Uint8Array, hdr: number): number {
  let invalid = 0;
  eachLine(data, hdr, (start, end, isStatusLine) => {
    if (!isStatusLine && !lineIsValid(data, start, end)) invalid++;
  });
  return invalid;
}

/** The message with its invalid header lines left out; `msg` is adjusted to the new header length. */
function withoutInvalidLines(msg: MsgArg, data: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let statusEnd = 0;
  eachLine(data, msg.hdr, (start, end, isStatusLine) => {
    if (isStatusLine) statusEnd = end;
    else if (end > start && lineIsValid(data, start, end)) parts.push(data.subarray(start, end));
  });
  const crlf = Buffer.from('\r\n');
  const head = Buffer.concat([data.subarray(0, statusEnd), crlf, ...parts.flatMap((p) => [p, crlf]), crlf]);
  const payload = data.subarray(msg.hdr);
  msg.size = msg.size - msg.hdr + head.length;
  msg.hdr = head.length;
  return Buffer.concat([head, payload]);
}
