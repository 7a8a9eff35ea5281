/**
 * WebSocket sessions over NATS (PROTOCOL.md §14): the frames a gateway and a
 * service exchange once a service has accepted an upgrade, the close codes,
 * and the subjects of topics. Decoding is decodeFrame's (stream.ts), so
 * one bounded decoder reads every frame of either kind.
 *
 * A session is a v2 stream with messages instead of a body: it runs between
 * the gateway's reply subject of the upgrade request and the service's
 * private inbox, uses the same credit and probes, and ends with `close` (or
 * `cancel`) from either side.
 */
import { intSize, isValidTopic, MAX_CLOSE_REASON_BYTES, MAX_CONTROL_BYTES, writeInt } from './stream.js';

/** Capability a gateway lists in an upgrade request's `caps`: it can complete a WebSocket upgrade. */
export const CAP_WS = 'ws';

/** Close codes (RFC 6455 §7.4.1) the gateway and the SDK use themselves. */
export const WS_CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  /** No code was in the client's close frame (never sent on the wire). */
  noStatus: 1005,
  /** The connection dropped without a close frame (never sent on the wire). */
  abnormal: 1006,
  invalidPayload: 1007,
  policy: 1008,
  tooBig: 1009,
  internalError: 1011,
  tryAgainLater: 1013,
} as const;

/**
 * True for a code a side may put in a close frame it sends to a client:
 * 1000–1003, 1007–1014, or 3000–4999 (RFC 6455 §7.4; 1004–1006 and 1015 are
 * reserved for reporting, never sent).
 */
export function isSendableCloseCode(code: number): boolean {
  return Number.isInteger(code) && ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999));
}

/** Every topic's NATS subject starts with this. */
export const TOPIC_PREFIX = '_NATSGW.topic.';

/** NATS header of a topic message whose payload is binary (absent: text). */
export const TOPIC_BINARY_HEADER = 'Natsgw-Binary';

/**
 * The subject a topic is published on: `_NATSGW.topic.<topic>`. A service
 * names its topics under its mount (`api.chat` → `api.chat.room1`), so two
 * services' rooms never meet.
 * @example topicSubject('api.chat.room1') // '_NATSGW.topic.api.chat.room1'
 */
export function topicSubject(topic: string): string {
  if (!isValidTopic(topic)) throw new TypeError(`topic ${JSON.stringify(topic.slice(0, 80))} must be tokens of A-Z a-z 0-9 - _ separated by dots, at most 200 characters`);
  return TOPIC_PREFIX + topic;
}

function binHeaderSize(n: number): number {
  return n <= 0xff ? 2 : n <= 0xffff ? 3 : 5;
}

function writeBinHeader(out: Buffer, at: number, n: number): number {
  if (n <= 0xff) {
    out[at] = 0xc4;
    out[at + 1] = n;
    return at + 2;
  }
  if (n <= 0xffff) {
    out[at] = 0xc5;
    out.writeUInt16BE(n, at + 1);
    return at + 3;
  }
  out[at] = 0xc6;
  out.writeUInt32BE(n, at + 1);
  return at + 5;
}

function fixstr(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > 0xff) throw new RangeError('string too long for a frame field');
  return Buffer.concat([b.length <= 31 ? Buffer.from([0xa0 | b.length]) : Buffer.from([0xd9, b.length]), b]);
}

// 86 a1 76 02 a1 74 a3 "msg" a3 "seq"
const MSG_PREFIX = Buffer.from('86a17602a174a36d7367a3736571', 'hex');
const BODY_KEY = Buffer.from('a4626f6479', 'hex');
const BIN_KEY = Buffer.from('a362696e', 'hex');
const MORE_KEY = Buffer.from('a46d6f7265', 'hex');

/**
 * A message frame: `{"v":2,"t":"msg","seq":seq,"body":<bin>,"bin":bin,"more":more}`:
 * a WebSocket message, or a piece of one when `more` (the rest follows in
 * the next msg frames). Written by hand: it is the hot path of a session.
 * @example encodeMsg(1, Buffer.from('hi'), false, false)
 */
export function encodeMsg(seq: number, body: Uint8Array, bin: boolean, more: boolean): Buffer {
  const n = body.length;
  const out = Buffer.allocUnsafe(MSG_PREFIX.length + intSize(seq) + BODY_KEY.length + binHeaderSize(n) + n + BIN_KEY.length + 1 + MORE_KEY.length + 1);
  let at = MSG_PREFIX.copy(out, 0);
  at = writeInt(out, at, seq);
  at += BODY_KEY.copy(out, at);
  at = writeBinHeader(out, at, n);
  out.set(body, at);
  at += n;
  at += BIN_KEY.copy(out, at);
  out[at++] = bin ? 0xc3 : 0xc2;
  at += MORE_KEY.copy(out, at);
  out[at] = more ? 0xc3 : 0xc2;
  return out;
}

// 84 a1 76 02 a1 74 a5 "close" a4 "code"
const CLOSE_PREFIX = Buffer.from('84a17602a174a5636c6f7365a4636f6465', 'hex');
const REASON_KEY = fixstr('reason');

/**
 * A close frame: `{"v":2,"t":"close","code":code,"reason":reason}`. The
 * sender's side of the session is over; the receiver closes its side with
 * that code and sends nothing more. `reason` is cut to 123 bytes.
 * @example encodeClose(1000, 'bye') // 84 a1 76 02 a1 74 a5 close a4 code cd 03e8 a6 reason a3 bye
 */
export function encodeClose(code: number, reason: string): Buffer {
  let r = Buffer.from(reason, 'utf8');
  if (r.length > MAX_CLOSE_REASON_BYTES) r = Buffer.from(cutUtf8(r, MAX_CLOSE_REASON_BYTES));
  const out = Buffer.allocUnsafe(CLOSE_PREFIX.length + 3 + REASON_KEY.length + (r.length <= 31 ? 1 : 2) + r.length);
  let at = CLOSE_PREFIX.copy(out, 0);
  out[at] = 0xcd;
  out.writeUInt16BE(code, at + 1);
  at += 3;
  at += REASON_KEY.copy(out, at);
  if (r.length <= 31) out[at++] = 0xa0 | r.length;
  else {
    out[at++] = 0xd9;
    out[at++] = r.length;
  }
  r.copy(out, at);
  return out;
}

/** The longest prefix of `b` of at most `max` bytes that ends on a UTF-8 character boundary, as text. */
export function cutUtf8(b: Buffer, max: number): string {
  let end = Math.min(max, b.length);
  // Step back over continuation bytes (10xxxxxx) to the start of the character that would be cut.
  if (end < b.length) while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end).toString('utf8');
}

/**
 * A topic frame: `{"v":2,"t":"sub"|"unsub"|"subscribed","topic":topic}`.
 * The service (un)subscribes its connection to a topic; the gateway answers
 * `subscribed` once its NATS subscription for the topic is in place.
 */
export function encodeTopicFrame(t: 'sub' | 'unsub' | 'subscribed', topic: string): Buffer {
  if (!isValidTopic(topic)) throw new TypeError(`invalid topic ${JSON.stringify(topic.slice(0, 80))}`);
  return Buffer.concat([Buffer.from([0x83, 0xa1, 0x76, 0x02, 0xa1, 0x74]), fixstr(t), fixstr('topic'), fixstr(topic)]);
}

/** A ping or pong frame: `{"v":2,"t":"ping"|"pong","body":<bin>}`, at most 125 bytes of body. */
export function encodeControl(t: 'ping' | 'pong', body: Uint8Array): Buffer {
  const b = body.length > MAX_CONTROL_BYTES ? body.subarray(0, MAX_CONTROL_BYTES) : body;
  return Buffer.concat([Buffer.from([0x83, 0xa1, 0x76, 0x02, 0xa1, 0x74]), fixstr(t), BODY_KEY, Buffer.from([0xc4, b.length]), b]);
}

/** What {@link MessageReceiver.take} returns for a message over the size limit (the session closes with 1009). */
export const MESSAGE_TOO_BIG = 'message too big';

/**
 * The receiving side of one direction of a session (§14.3, §14.4), the
 * same on both sides: msg frames in sequence, within the credit granted,
 * pieces put together up to the size limit. Credit is the caller's to grant
 * (`grant()`); pieces count as taken when they arrive (`pending` says how
 * many bytes the caller holds for a message not yet complete).
 */
export class MessageReceiver {
  /** Total credit granted to the sender so far. */
  private granted: number;
  private consumed = 0;
  private seq = 0;
  private parts: Buffer[] = [];
  private partsBytes = 0;
  private partsBin = false;

  constructor(
    window: number,
    private readonly maxMessageBytes: number,
  ) {
    this.granted = window;
  }

  /** Records `n` more bytes of credit sent to the sender. */
  grant(n: number): void {
    this.granted += n;
  }

  /**
   * Takes a msg frame. Returns the message when this frame completes one
   * (a view into `body` when it is the whole message, else a new buffer),
   * `undefined` for a piece (copied and kept), {@link MESSAGE_TOO_BIG}, or
   * the reason (a string) the sender broke the protocol.
   */
  take(seq: number, body: Buffer, bin: boolean, more: boolean): Buffer | undefined | string {
    // NATS core drops messages to a slow consumer: a gap would corrupt the message stream.
    if (seq !== this.seq + 1) return `msg frame ${seq} where ${this.seq + 1} was next`;
    this.seq = seq;
    this.consumed += body.length;
    if (this.consumed > this.granted) return 'the sender sent more than its credit';
    if (this.partsBytes + body.length > this.maxMessageBytes) return MESSAGE_TOO_BIG;
    if (this.parts.length > 0 && bin !== this.partsBin) return 'a message changed between text and binary';
    if (more) {
      // The frame's body is a view into the NATS message: keep a copy.
      this.parts.push(Buffer.from(body));
      this.partsBytes += body.length;
      this.partsBin = bin;
      return undefined;
    }
    if (this.parts.length === 0) return body;
    const message = Buffer.concat([...this.parts, body], this.partsBytes + body.length);
    this.parts = [];
    this.partsBytes = 0;
    return message;
  }
}
