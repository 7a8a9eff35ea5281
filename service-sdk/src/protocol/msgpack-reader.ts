/**
 * A bounded msgpack reader for the envelopes (PROTOCOL.md §1): the only
 * decoder either side runs on bytes that arrive from NATS.
 *
 * Everything that arrives is untrusted, so unlike a general-purpose decoder:
 * - a declared length is checked against the bytes left before anything is
 *   built for it: an array of n items needs at least n bytes, a map of n
 *   entries 2n, a str or bin its length; a few bytes can never make it
 *   allocate much (msgpackr spends 268 MB and 275 ms on 8 bytes declaring a
 *   33-million-item array);
 * - integers are JavaScript numbers: 64-bit encodings are accepted when they
 *   fit a safe integer, refused otherwise (never a BigInt, which
 *   JSON.stringify throws on);
 * - extension types and the never-used byte 0xc1 are refused, str must be
 *   UTF-8;
 * - skipping unknown values is iterative work bounded by the input length,
 *   and nesting deeper than {@link MAX_DEPTH} is refused.
 * Every read is O(bytes read). The reader is module state, not an object:
 * decoding is synchronous and never re-entered, and the hot path allocates
 * nothing but the values it returns.
 */
import { isUtf8 } from 'node:buffer';
import { CHAR_CLASS, classOf } from './http-syntax.js';

/** A message that is not msgpack as the protocol allows it; `message` says why, briefly. */
export class MsgpackError extends Error {
  override name = 'MsgpackError';
}

/** Deepest nesting a skipped value may have. */
export const MAX_DEPTH = 32;

let buf: Buffer = Buffer.alloc(0);
let pos = 0;
let end = 0;

/**
 * The CHAR_CLASS bits of the last str read (http-syntax.ts): callers check
 * header names and values with this instead of scanning the string again.
 */
export let lastStrClass = 0;

// Buffer#latin1Slice is what toString('latin1') calls after argument
// checks that cost as much as the copy for the short strings envelopes hold.
type Latin1 = { latin1Slice(start: number, end: number): string };

function fail(why: string): never {
  throw new MsgpackError(why);
}

/** Starts reading `data` (a view, not a copy). */
export function begin(data: Uint8Array): void {
  buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  pos = 0;
  end = buf.length;
}

/** True when every byte has been read. */
export function atEnd(): boolean {
  return pos === end;
}

/** Drops the reference to the input (so a large message can be collected). */
export function finish(): void {
  buf = EMPTY;
  pos = end = 0;
}
const EMPTY = Buffer.alloc(0);

function need(n: number): void {
  if (end - pos < n) fail('truncated');
}

function byte(): number {
  if (pos >= end) fail('truncated');
  return buf[pos++]!;
}

function u16(): number {
  need(2);
  const v = buf.readUInt16BE(pos);
  pos += 2;
  return v;
}

function u32(): number {
  need(4);
  const v = buf.readUInt32BE(pos);
  pos += 4;
  return v;
}

/** The type byte of the next value, without consuming it. */
export function peek(): number {
  if (pos >= end) fail('truncated');
  return buf[pos]!;
}

/** Consumes a nil if one is next; true when it did. */
export function nil(): boolean {
  if (pos < end && buf[pos] === 0xc0) {
    pos++;
    return true;
  }
  return false;
}

/** A bool (0xc2 false, 0xc3 true). */
export function bool(): boolean {
  const t = byte();
  if (t === 0xc2) return false;
  if (t === 0xc3) return true;
  return fail('not a bool');
}

/** A map header: the number of entries (each needs at least two bytes). */
export function mapHeader(): number {
  const t = byte();
  let n: number;
  if (t >= 0x80 && t <= 0x8f) n = t & 0x0f;
  else if (t === 0xde) n = u16();
  else if (t === 0xdf) n = u32();
  else fail('not a map');
  if (n * 2 > end - pos) fail('map longer than the message');
  return n;
}

/** An array header: the number of items (each needs at least one byte). */
export function arrayHeader(): number {
  const t = byte();
  let n: number;
  if (t >= 0x90 && t <= 0x9f) n = t & 0x0f;
  else if (t === 0xdc) n = u16();
  else if (t === 0xdd) n = u32();
  else fail('not an array');
  if (n > end - pos) fail('array longer than the message');
  return n;
}

/** Length of a str whose type byte `t` was read; -1 when `t` is not a str. */
function strLength(t: number): number {
  if (t >= 0xa0 && t <= 0xbf) return t & 0x1f;
  if (t === 0xd9) return byte();
  if (t === 0xda) return u16();
  if (t === 0xdb) return u32();
  return -1;
}

function binLength(t: number): number {
  if (t === 0xc4) return byte();
  if (t === 0xc5) return u16();
  if (t === 0xc6) return u32();
  return -1;
}

/** Decodes `len` bytes at `pos` as UTF-8, refusing malformed sequences. */
function text(len: number): string {
  need(len);
  const start = pos;
  pos += len;
  // ASCII (header names, nearly every value) decodes as latin1, which is
  // cheaper than UTF-8 decoding; anything else is checked and decoded as UTF-8.
  let k = 0;
  for (let i = start; i < pos; i++) {
    const c = buf[i]!;
    if (c >= 0x80) return utf8(start, pos);
    k |= CHAR_CLASS[c]!;
  }
  lastStrClass = k;
  return len <= 16 ? shortAscii(start, len) : (buf as unknown as Latin1).latin1Slice(start, pos);
}

const fcc = String.fromCharCode;

/**
 * Up to 16 ASCII bytes as a string: fromCharCode with a fixed number of
 * arguments builds the string directly, about twice as fast here as a
 * native slice call for the short names and values envelopes are full of
 * (the trick msgpackr uses when its native addon is absent).
 */
function shortAscii(p: number, len: number): string {
  const b = buf;
  if (len > 8) return shortAscii(p, 8) + shortAscii(p + 8, len - 8);
  switch (len) {
    case 0:
      return '';
    case 1:
      return fcc(b[p]!);
    case 2:
      return fcc(b[p]!, b[p + 1]!);
    case 3:
      return fcc(b[p]!, b[p + 1]!, b[p + 2]!);
    case 4:
      return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!);
    case 5:
      return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!);
    case 6:
      return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!);
    case 7:
      return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!);
    default:
      return fcc(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!);
  }
}

function utf8(start: number, stop: number): string {
  const view = buf.subarray(start, stop);
  if (!isUtf8(view)) fail('str is not UTF-8');
  const s = buf.toString('utf8', start, stop);
  lastStrClass = classOf(s);
  return s;
}

/** A str. */
export function str(): string {
  const len = strLength(byte());
  if (len < 0) fail('not a str');
  return text(len);
}

/** Field names grouped by byte length, for {@link keyIndex}: `[length][i] = [bytes, index]`. */
export type KeyTable = ReadonlyArray<ReadonlyArray<readonly [Buffer, number]> | undefined>;

/** Builds the {@link KeyTable} of `names` (ASCII). */
export function keyTable(names: readonly string[]): KeyTable {
  const table: Array<Array<readonly [Buffer, number]>> = [];
  for (const [index, n] of names.entries()) (table[n.length] ??= []).push([Buffer.from(n, 'latin1'), index] as const);
  return table;
}

/**
 * Reads a map key and returns its index among the table's names, or -1 for
 * another key; no string is built. Throws when the key is not a str.
 */
export function keyIndex(table: KeyTable): number {
  const len = strLength(byte());
  if (len < 0) fail('map keys must be strings');
  need(len);
  const start = pos;
  pos += len;
  const candidates = table[len];
  if (candidates === undefined) return -1;
  outer: for (let k = 0; k < candidates.length; k++) {
    const [name, index] = candidates[k]!;
    for (let i = 0; i < len; i++) if (name[i] !== buf[start + i]) continue outer;
    return index;
  }
  return -1;
}

/** A str, or undefined (consuming nothing) when the next value is not one. */
export function strOrUndefined(): string | undefined {
  if (pos >= end) fail('truncated');
  const t = buf[pos]!;
  if (!((t >= 0xa0 && t <= 0xbf) || (t >= 0xd9 && t <= 0xdb))) return undefined;
  return str();
}

/** A bin, or the UTF-8 bytes of a str: a view into the message, not a copy. */
export function bytes(): Buffer {
  const t = byte();
  let len = binLength(t);
  if (len < 0) len = strLength(t);
  if (len < 0) fail('not bin or str');
  need(len);
  const out = buf.subarray(pos, pos + len);
  pos += len;
  return out;
}

/** An integer of any msgpack encoding, as a safe JavaScript integer. */
export function int(): number {
  const t = byte();
  if (t <= 0x7f) return t;
  if (t >= 0xe0) return t - 0x100;
  switch (t) {
    case 0xcc:
      return byte();
    case 0xcd:
      return u16();
    case 0xce:
      return u32();
    case 0xcf: {
      const hi = u32();
      const lo = u32();
      const v = hi * 0x1_0000_0000 + lo;
      if (!Number.isSafeInteger(v)) fail('integer out of range');
      return v;
    }
    case 0xd0:
      need(1);
      return buf.readInt8(pos++);
    case 0xd1: {
      need(2);
      const v = buf.readInt16BE(pos);
      pos += 2;
      return v;
    }
    case 0xd2: {
      need(4);
      const v = buf.readInt32BE(pos);
      pos += 4;
      return v;
    }
    case 0xd3: {
      need(8);
      const hi = buf.readInt32BE(pos);
      const lo = buf.readUInt32BE(pos + 4);
      pos += 8;
      const v = hi * 0x1_0000_0000 + lo;
      if (!Number.isSafeInteger(v)) fail('integer out of range');
      return v;
    }
  }
  return fail('not an integer');
}

/**
 * Skips one value of any type. Work is bounded by the input: every item
 * skipped consumes at least one byte, and a count of items still to skip per
 * level replaces recursion.
 */
export function skip(): void {
  const pending: number[] = [1];
  while (pending.length > 0) {
    if (pending[pending.length - 1] === 0) {
      pending.pop();
      continue;
    }
    pending[pending.length - 1]!--;
    const t = byte();
    let children = 0;
    let skipBytes = 0;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) skipBytes = 0;
    else if (t >= 0x80 && t <= 0x8f) children = (t & 0x0f) * 2;
    else if (t >= 0x90 && t <= 0x9f) children = t & 0x0f;
    else if (t >= 0xa0 && t <= 0xbf) skipBytes = t & 0x1f;
    else {
      switch (t) {
        case 0xcc:
        case 0xd0:
          skipBytes = 1;
          break;
        case 0xcd:
        case 0xd1:
          skipBytes = 2;
          break;
        case 0xce:
        case 0xd2:
        case 0xca:
          skipBytes = 4;
          break;
        case 0xcf:
        case 0xd3:
        case 0xcb:
          skipBytes = 8;
          break;
        case 0xd9:
        case 0xc4:
          skipBytes = byte();
          break;
        case 0xda:
        case 0xc5:
          skipBytes = u16();
          break;
        case 0xdb:
        case 0xc6:
          skipBytes = u32();
          break;
        case 0xdc:
          children = u16();
          break;
        case 0xdd:
          children = u32();
          break;
        case 0xde:
          children = u16() * 2;
          break;
        case 0xdf:
          children = u32() * 2;
          break;
        default:
          // 0xc1 (never used) and the extension types 0xc7-0xc9, 0xd4-0xd8.
          fail(t === 0xc1 ? 'byte 0xc1 is never used' : 'extension types are not allowed');
      }
    }
    need(skipBytes);
    pos += skipBytes;
    if (children > 0) {
      if (children > end - pos) fail('container longer than the message');
      if (pending.length >= MAX_DEPTH) fail('nested too deeply');
      pending.push(children);
    }
  }
}
