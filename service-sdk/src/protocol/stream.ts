/**
 * Protocol v2 framing (PROTOCOL.md §7): the messages that carry a body
 * larger than one NATS message, or one written over time, between the
 * gateway and the one service instance that took the request.
 *
 * Both sides import this module: the frame encoders and the bounded frame
 * decoder, the credit window, and the unguessable keys of private inboxes.
 * Frames are msgpack maps like the envelopes; a data frame is written by
 * hand (one allocation, one copy of the body) because it is the hot path of
 * a download or an upload.
 */
import { randomBytes } from 'node:crypto';
import * as R from './msgpack-reader.js';

/** `v` of every message that belongs to a stream: a streamed request head, a streamed reply head, a frame. */
export const STREAM_VERSION = 2;

/** Capability a gateway lists in a request's `caps` when it accepts streamed replies. */
export const CAP_STREAM = 'stream';

/**
 * Bytes of body a receiver grants a sender up front, and keeps topped up as
 * it consumes them: the most either side holds for one stream beyond what
 * its own consumer has taken (1 MiB).
 */
export const DEFAULT_STREAM_WINDOW = 1024 * 1024;

/**
 * Largest body in one frame: what fits in the server's max_payload with
 * room for the frame's own fields (so about 1 MiB by default; in practice a
 * frame is also bounded by the credit). Measured here, fewer large messages
 * cost the three processes less CPU per byte than 64 or 256 KiB ones.
 */
export function frameBodyLimit(maxPayload: number): number {
  return Math.max(1024, maxPayload - 1024);
}

/**
 * A peer with no message for the other side for this long sends an empty
 * credit (a probe), published with its reply subject, so a peer that is gone
 * shows up as NATS no-responders within this time plus one round trip.
 */
export const PROBE_INTERVAL_MS = 2000;

/**
 * The frames (`t`) of a stream, and those of a WebSocket session
 * (PROTOCOL.md §14: `msg`, `close`, `sub`, `unsub`, `subscribed`, `ping`,
 * `pong`; their encoders are in ws.ts).
 */
export type Frame =
  | { t: 'data'; seq: number; body: Buffer; more: boolean }
  | { t: 'credit'; n: number; inbox: string | undefined }
  | { t: 'cancel'; reason: string }
  | { t: 'msg'; seq: number; body: Buffer; bin: boolean; more: boolean }
  | { t: 'close'; code: number; reason: string }
  | { t: 'sub' | 'unsub' | 'subscribed'; topic: string }
  | { t: 'ping' | 'pong'; body: Buffer };

const FRAME_FIELDS = ['v', 't', 'seq', 'body', 'more', 'n', 'inbox', 'reason', 'bin', 'code', 'topic'] as const;
const FRAME_KEYS = R.keyTable(FRAME_FIELDS);
const EMPTY = Buffer.alloc(0);

/** Most bytes of a cancel reason kept. */
const MAX_REASON = 200;

/** A WebSocket close reason fits a control frame with its code: 123 bytes (RFC 6455 §5.5). */
export const MAX_CLOSE_REASON_BYTES = 123;
/** A WebSocket ping or pong carries at most 125 bytes (RFC 6455 §5.5). */
export const MAX_CONTROL_BYTES = 125;
/** Longest topic name, in characters. */
export const MAX_TOPIC_LENGTH = 200;

/**
 * True for a topic name (PROTOCOL.md §14.5): one or more tokens of
 * `A-Z a-z 0-9 - _` separated by dots, at most 200 characters, so that it is
 * the tail of a literal NATS subject with no wildcard.
 */
export function isValidTopic(topic: string): boolean {
  if (topic.length === 0 || topic.length > MAX_TOPIC_LENGTH) return false;
  let tokenStart = 0;
  for (let i = 0; i <= topic.length; i++) {
    const c = i === topic.length ? 46 : topic.charCodeAt(i);
    if (c === 46 /* . */) {
      if (i === tokenStart) return false;
      tokenStart = i + 1;
    } else if (!((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 95)) return false;
  }
  return true;
}

/**
 * True for a subject a peer may name as its stream inbox: a literal subject
 * (tokens of visible ASCII without `*` or `>`, none empty), at most 255
 * characters, and not in the `$` (system, JetStream) or `_NATSGW.` spaces, so
 * a hostile peer cannot steer frames onto an API subject.
 */
export function isValidInbox(subject: string): boolean {
  if (subject.length === 0 || subject.length > 255) return false;
  if (subject.charCodeAt(0) === 36 /* $ */ || subject.startsWith('_NATSGW.')) return false;
  let tokenStart = 0;
  for (let i = 0; i <= subject.length; i++) {
    const c = i === subject.length ? 46 : subject.charCodeAt(i);
    if (c === 46 /* . */) {
      if (i === tokenStart) return false;
      const token = i - tokenStart === 1 ? subject.charCodeAt(tokenStart) : 0;
      if (token === 42 /* * */ || token === 62 /* > */) return false;
      tokenStart = i + 1;
    } else if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

/** Decodes a frame; a short reason (string) when it is not one. Never throws; `body` is a view into `data`. */
export function decodeFrame(data: Uint8Array): Frame | string {
  let v = -1;
  let t = '';
  let seq = -1;
  let body: Buffer = EMPTY;
  let more = false;
  let n = -1;
  let inbox: string | undefined;
  let reason = '';
  let bin = false;
  let code = -1;
  let topic = '';
  R.begin(data);
  try {
    const t0 = R.atEnd() ? -1 : R.peek();
    if (!((t0 >= 0x80 && t0 <= 0x8f) || t0 === 0xde || t0 === 0xdf)) return 'frame is not a msgpack map';
    const entries = R.mapHeader();
    let seen = 0;
    for (let i = 0; i < entries; i++) {
      let k: number;
      try {
        k = R.keyIndex(FRAME_KEYS);
      } catch {
        return 'frame map keys must be strings';
      }
      if (k < 0) {
        R.skip();
        continue;
      }
      if ((seen & (1 << k)) !== 0) return `frame has the field ${FRAME_FIELDS[k]} twice`;
      seen |= 1 << k;
      switch (k) {
        case 0:
          v = R.int();
          break;
        case 1:
          t = R.str();
          break;
        case 2:
          seq = R.int();
          break;
        case 3:
          body = R.nil() ? EMPTY : R.bytes();
          break;
        case 4:
          more = R.bool();
          break;
        case 5:
          n = R.int();
          break;
        case 6:
          inbox = R.str();
          break;
        case 7:
          reason = R.str();
          break;
        case 8:
          bin = R.bool();
          break;
        case 9:
          code = R.int();
          break;
        case 10:
          topic = R.str();
          break;
      }
    }
    if (!R.atEnd()) return 'frame has bytes after its map';
  } catch (err) {
    if (err instanceof R.MsgpackError) return `frame is not valid msgpack: ${err.message}`;
    throw err;
  } finally {
    R.finish();
  }
  if (v !== STREAM_VERSION) return `frame has unsupported protocol version ${v === -1 ? 'undefined' : v}`;
  switch (t) {
    case 'data':
      if (seq < 1) return 'data frame has no seq of 1 or more';
      return { t, seq, body, more };
    case 'credit':
      if (n < 0) return 'credit frame has no n of 0 or more';
      if (inbox !== undefined && !isValidInbox(inbox)) return 'credit frame names an inbox that is not a literal subject';
      return { t, n, inbox };
    case 'cancel':
      return { t, reason: reason.length > MAX_REASON ? reason.slice(0, MAX_REASON) : reason };
    case 'msg':
      if (seq < 1) return 'msg frame has no seq of 1 or more';
      return { t, seq, body, bin, more };
    case 'close':
      if (code < 1000 || code > 4999) return 'close frame has no code from 1000 to 4999';
      if (Buffer.byteLength(reason) > MAX_CLOSE_REASON_BYTES) return `close frame reason is longer than ${MAX_CLOSE_REASON_BYTES} bytes`;
      return { t, code, reason };
    case 'sub':
    case 'unsub':
    case 'subscribed':
      if (!isValidTopic(topic)) return `${t} frame names no valid topic`;
      return { t, topic };
    case 'ping':
    case 'pong':
      if (body.length > MAX_CONTROL_BYTES) return `${t} frame body is longer than ${MAX_CONTROL_BYTES} bytes`;
      return { t, body };
    default:
      return `frame has unknown type ${JSON.stringify(t.slice(0, 32))}`;
  }
}

// Encoding. Keys are fixstr; ints use the smallest encoding.

/** Bytes of a non-negative integer in its smallest msgpack encoding (for the hand-written frame encoders). */
export function intSize(n: number): number {
  return n <= 0x7f ? 1 : n <= 0xffff ? 3 : n <= 0xffffffff ? 5 : 9;
}

/** Writes a non-negative integer in its smallest msgpack encoding at `at`; returns the end. */
export function writeInt(buf: Buffer, at: number, n: number): number {
  if (n <= 0x7f) {
    buf[at] = n;
    return at + 1;
  }
  if (n <= 0xffff) {
    buf[at] = 0xcd;
    buf.writeUInt16BE(n, at + 1);
    return at + 3;
  }
  if (n <= 0xffffffff) {
    buf[at] = 0xce;
    buf.writeUInt32BE(n, at + 1);
    return at + 5;
  }
  buf[at] = 0xcf;
  buf.writeUInt32BE(Math.floor(n / 0x1_0000_0000), at + 1);
  buf.writeUInt32BE(n >>> 0, at + 5);
  return at + 9;
}

// 85 a1 76 02 a1 74 a4 "data" a3 "seq"
const DATA_PREFIX = Buffer.from('85a17602a174a464617461a3736571', 'hex');
const BODY_KEY = Buffer.from('a4626f6479', 'hex');
const MORE_KEY = Buffer.from('a46d6f7265', 'hex');

/**
 * A data frame: `{"v":2,"t":"data","seq":seq,"body":<bin>,"more":more}`.
 * `parts` are copied in order into the frame's body (several small writes
 * can leave as one frame).
 * @example encodeData(1, [Buffer.from('hi')], false)
 */
export function encodeData(seq: number, parts: readonly Uint8Array[], bodyLength: number, more: boolean): Buffer {
  const binHeader = bodyLength <= 0xff ? 2 : bodyLength <= 0xffff ? 3 : 5;
  const size = DATA_PREFIX.length + intSize(seq) + BODY_KEY.length + binHeader + bodyLength + MORE_KEY.length + 1;
  const out = Buffer.allocUnsafe(size);
  let at = DATA_PREFIX.copy(out, 0);
  at = writeInt(out, at, seq);
  at += BODY_KEY.copy(out, at);
  if (binHeader === 2) {
    out[at] = 0xc4;
    out[at + 1] = bodyLength;
  } else if (binHeader === 3) {
    out[at] = 0xc5;
    out.writeUInt16BE(bodyLength, at + 1);
  } else {
    out[at] = 0xc6;
    out.writeUInt32BE(bodyLength, at + 1);
  }
  at += binHeader;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  at += MORE_KEY.copy(out, at);
  out[at] = more ? 0xc3 : 0xc2;
  return out;
}

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= 31) return Buffer.concat([Buffer.from([0xa0 | b.length]), b]);
  if (b.length <= 0xff) return Buffer.concat([Buffer.from([0xd9, b.length]), b]);
  const h = Buffer.alloc(3);
  h[0] = 0xda;
  h.writeUInt16BE(Math.min(b.length, 0xffff), 1);
  return Buffer.concat([h, b.subarray(0, 0xffff)]);
}

// 83|84 a1 76 02 a1 74 a6 "credit" a1 "n"
const CREDIT_PREFIX_3 = Buffer.from('83a17602a174a6637265646974a16e', 'hex');
const CREDIT_PREFIX_4 = Buffer.from('84a17602a174a6637265646974a16e', 'hex');
const INBOX_KEY = str('inbox');

/**
 * A credit frame: `{"v":2,"t":"credit","n":n}`, plus `"inbox"` on the first
 * one a service sends for a streamed request body. `n` = 0 is a probe.
 * @example encodeCredit(1048576) // 83 a1 76 02 a1 74 a6 credit a1 6e ce 00100000
 */
export function encodeCredit(n: number, inbox?: string): Buffer {
  const head = inbox === undefined ? CREDIT_PREFIX_3 : CREDIT_PREFIX_4;
  const out = Buffer.allocUnsafe(head.length + intSize(n));
  head.copy(out, 0);
  writeInt(out, head.length, n);
  return inbox === undefined ? out : Buffer.concat([out, INBOX_KEY, str(inbox)]);
}

/** The probe: an empty credit. */
export const PROBE_FRAME = encodeCredit(0);

// 83 a1 76 02 a1 74 a6 "cancel" a6 "reason"
const CANCEL_PREFIX = Buffer.from('83a17602a174a663616e63656ca6726561736f6e', 'hex');

/**
 * A cancel frame: `{"v":2,"t":"cancel","reason":reason}`: the sender gives
 * up on the stream (client gone, handler failed); nothing more follows.
 */
export function encodeCancel(reason: string): Buffer {
  return Buffer.concat([CANCEL_PREFIX, str(reason.slice(0, MAX_REASON))]);
}

/**
 * Removes `n` bytes from the front of `queue` (a body waiting for credit),
 * as the buffers that hold them: whole ones, and a view of the one cut.
 */
export function takeBytes(queue: Buffer[], n: number): Buffer[] {
  const parts: Buffer[] = [];
  let left = n;
  while (left > 0) {
    const head = queue[0]!;
    if (head.length <= left) {
      parts.push(head);
      queue.shift();
      left -= head.length;
    } else {
      parts.push(head.subarray(0, left));
      queue[0] = head.subarray(left);
      left = 0;
    }
  }
  return parts;
}

/** Random base64url characters per key: 11 (66 bits). */
const RANDOM_CHARS_PER_KEY = 11;
const RANDOM_POOL_BYTES = 3 * 1024;

/**
 * Unique, unguessable keys for reply and stream inboxes: a sequence number
 * (unique; it holds no '_') and 66 random bits as base64url (unguessable),
 * cut from a string made once per 372 keys: cheaper than formatting random
 * numbers per key. A party that saw one key cannot derive the next.
 */
export class InboxKeys {
  private seq = 0;
  private random = '';
  private offset = 0;

  next(): string {
    if (this.offset + RANDOM_CHARS_PER_KEY > this.random.length) {
      this.random = randomBytes(RANDOM_POOL_BYTES).toString('base64url');
      this.offset = 0;
    }
    const o = this.offset;
    this.offset = o + RANDOM_CHARS_PER_KEY;
    return (this.seq++).toString(36) + '_' + this.random.slice(o, o + RANDOM_CHARS_PER_KEY);
  }
}

/** NATS status the server publishes to a reply subject when nothing is subscribed to the subject. */
export const NO_RESPONDERS_STATUS = 503;

/** True for the header-only status message the server sends when nobody received a message published with a reply subject. */
export function isNoResponders(msg: { data: Uint8Array; headers?: { code: number } | undefined }): boolean {
  return msg.data.length === 0 && msg.headers?.code === NO_RESPONDERS_STATUS;
}
