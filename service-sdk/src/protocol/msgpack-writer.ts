/**
 * The msgpack writer for the envelopes: the encoder both sides run once per
 * request (the gateway its request envelopes, the SDK its replies).
 *
 * A general-purpose encoder (msgpackr, before this) walks the object with
 * Object.keys and a type switch per value; an envelope's fields and their
 * types are known, so envelope.ts writes them in order with the calls below.
 * The output is the same bytes msgpackr wrote (smallest header for every
 * str, bin, array, map and integer; a property test compares the two), so
 * nothing changes on the wire.
 *
 * Writes go into a shared scratch buffer and finish() hands out the
 * message's bytes as a view of it; the next message is written after it, and
 * a new scratch is taken when one is full. A view stays valid for as long as
 * it is held: nothing is ever written twice into the same bytes. Like the
 * reader, the writer is module state: encoding is synchronous and never
 * re-entered.
 */

/** Scratch buffers are this large; a message larger than a quarter of it gets a buffer of its own. */
const SCRATCH_BYTES = 64 * 1024;

let scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
let start = 0;
let pos = 0;

/** Starts a message of at most `maxBytes` bytes (an upper bound: strings count 3 bytes per UTF-16 unit). */
export function begin(maxBytes: number): void {
  if (maxBytes > SCRATCH_BYTES / 4) {
    scratch = Buffer.allocUnsafe(maxBytes);
    start = 0;
  } else if (start + maxBytes > scratch.length) {
    scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
    start = 0;
  }
  pos = start;
}

/** The message written since begin(). */
export function finish(): Buffer {
  const out = scratch.subarray(start, pos);
  start = pos;
  // A message that had its own buffer leaves no room: the next one takes a new scratch.
  if (scratch.length > SCRATCH_BYTES) start = scratch.length;
  return out;
}

/** Upper bound of the encoded size of `s` as a msgpack str. */
export function strBound(s: string): number {
  return 5 + s.length * 3;
}

/**
 * `tag8`, `tag16` or `tag32` followed by `n` in 1, 2 or 4 big-endian bytes:
 * the smallest that holds it (tag8 0: there is no 1-byte form).
 */
function sized(n: number, tag8: number, tag16: number, tag32: number): void {
  if (n < 0x100 && tag8 !== 0) {
    scratch[pos++] = tag8;
    scratch[pos++] = n;
  } else if (n < 0x10000) {
    scratch[pos++] = tag16;
    scratch[pos++] = n >>> 8;
    scratch[pos++] = n & 0xff;
  } else {
    scratch[pos++] = tag32;
    scratch.writeUInt32BE(n, pos);
    pos += 4;
  }
}

export function mapHeader(n: number): void {
  if (n < 16) scratch[pos++] = 0x80 | n;
  else sized(n, 0, 0xde, 0xdf);
}

export function arrayHeader(n: number): void {
  if (n < 16) scratch[pos++] = 0x90 | n;
  else sized(n, 0, 0xdc, 0xdd);
}

/** A non-negative integer below 2^32 (every integer an envelope carries). */
export function uint(n: number): void {
  if (n < 0x80) scratch[pos++] = n;
  else sized(n, 0xcc, 0xcd, 0xce);
}

export function bool(b: boolean): void {
  scratch[pos++] = b ? 0xc3 : 0xc2;
}

export function str(s: string): void {
  const n = s.length;
  // Short ASCII strings (keys, methods, most header names and values) are
  // copied here; anything else by Buffer#write.
  if (n < 32) {
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      scratch[pos + 1 + i] = c;
    }
    if (i === n) {
      scratch[pos] = 0xa0 | n;
      pos += 1 + n;
      return;
    }
  }
  const bytes = Buffer.byteLength(s, 'utf8');
  if (bytes < 32) scratch[pos++] = 0xa0 | bytes;
  else sized(bytes, 0xd9, 0xda, 0xdb);
  pos += scratch.write(s, pos, bytes, 'utf8');
}

export function bin(b: Uint8Array): void {
  sized(b.length, 0xc4, 0xc5, 0xc6);
  scratch.set(b, pos);
  pos += b.length;
}

/** Upper bound of a flat string list (headers, caps) as a msgpack array. */
export function strArrayBound(list: readonly string[]): number {
  let n = 5;
  for (let i = 0; i < list.length; i++) n += 5 + list[i]!.length * 3;
  return n;
}

export function strArray(list: readonly string[]): void {
  arrayHeader(list.length);
  for (let i = 0; i < list.length; i++) str(list[i]!);
}
