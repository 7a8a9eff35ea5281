/**
 * The compression block: gzip or brotli (node:zlib), negotiated from
 * Accept-Encoding with its q-values (RFC 9110 §12.5.3), for responses of the
 * listed content types, never for an encoded, a no-transform, a partial or a
 * bodyless response. Whole replies are compressed in one call; streamed
 * ones chunk by chunk, each chunk flushed, so nothing is held back (an
 * event stream stays an event stream).
 */
import zlib from 'node:zlib';
import type { CompressionConfig } from './policy-schema.js';

export type Encoding = 'br' | 'gzip';

/** Brotli's quality for responses made on the fly: 4 compresses about as well as gzip -6 at a similar speed (11, the default, is for static files). */
const BROTLI_QUALITY = 4;
const GZIP_LEVEL = 6;

const GZIP_ONLY: readonly Encoding[] = ['gzip'];

/** A longer Accept-Encoding is not parsed (no encoding is chosen). */
const MAX_ACCEPT_ENCODING = 1024;

export class CompressionPolicy {
  private readonly exact = new Set<string>();
  private readonly prefixes: string[] = [];
  private readonly suffixes: { type: string; suffix: string }[] = [];

  constructor(readonly config: CompressionConfig) {
    for (const t of config.contentTypes) {
      const star = t.indexOf('*');
      if (star === -1) this.exact.add(t);
      else if (t.endsWith('/*')) this.prefixes.push(t.slice(0, -1));
      else this.suffixes.push({ type: t.slice(0, star), suffix: t.slice(star + 1) });
    }
  }

  /** The encoding to use for a client's Accept-Encoding, if any; `gzipOnly` for a streamed body (BodyCompressor). */
  negotiate(acceptEncoding: string | undefined, gzipOnly = false): Encoding | undefined {
    if (acceptEncoding === undefined || acceptEncoding.length > MAX_ACCEPT_ENCODING) return undefined;
    let best: Encoding | undefined;
    let bestQ = 0;
    let bestRank = 99;
    const q = parseAcceptEncoding(acceptEncoding);
    const offered = gzipOnly ? (this.config.encodings.includes('gzip') ? GZIP_ONLY : []) : this.config.encodings;
    for (let rank = 0; rank < offered.length; rank++) {
      const enc = offered[rank]!;
      const weight = q.get(enc) ?? q.get('*') ?? 0;
      if (weight > bestQ || (weight === bestQ && weight > 0 && rank < bestRank)) {
        best = enc;
        bestQ = weight;
        bestRank = rank;
      }
    }
    return bestQ > 0 ? best : undefined;
  }

  /**
   * Whether a response with these facts is compressed. `length` is its
   * Content-Length (-1 unknown: a stream).
   */
  applies(status: number, method: string, contentType: string | undefined, contentEncoding: string | undefined, cacheControl: string | undefined, length: number): boolean {
    if (method === 'HEAD' || status < 200 || status === 204 || status === 206 || status === 304) return false;
    if (contentEncoding !== undefined && contentEncoding.trim().toLowerCase() !== 'identity') return false;
    if (cacheControl?.toLowerCase().includes('no-transform')) return false;
    if (length >= 0 && length < this.config.minBytes) return false;
    if (contentType === undefined) return false;
    const semi = contentType.indexOf(';');
    const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
    if (this.exact.has(type)) return true;
    for (const p of this.prefixes) if (type.startsWith(p)) return true;
    for (const s of this.suffixes) if (type.startsWith(s.type) && type.endsWith(s.suffix) && type.length > s.type.length + s.suffix.length) return true;
    return false;
  }
}

/** Accept-Encoding as coding → q (RFC 9110 §12.4.2); malformed members are skipped. */
export function parseAcceptEncoding(value: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const member of value.split(',')) {
    const semi = member.indexOf(';');
    const coding = (semi === -1 ? member : member.slice(0, semi)).trim().toLowerCase();
    if (coding === '') continue;
    let q = 1;
    if (semi !== -1) {
      const param = member
        .slice(semi + 1)
        .trim()
        .toLowerCase();
      if (!param.startsWith('q=')) continue;
      const text = param.slice(2).trim();
      // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
      if (!/^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(text)) continue;
      q = Number(text);
    }
    if (!out.has(coding)) out.set(coding, q);
  }
  return out;
}

/** A whole body, compressed. */
export function compressWhole(encoding: Encoding, body: Uint8Array): Buffer {
  return encoding === 'br'
    ? zlib.brotliCompressSync(body, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length } })
    : zlib.gzipSync(body, { level: GZIP_LEVEL });
}

/**
 * A gzip body compressed as it streams, synchronously, chunk by chunk:
 * each chunk is deflated on its own (zlib.deflateRawSync, ending in a sync
 * flush, so the client can decode all it got so far) and the pieces form
 * one deflate stream (a deflate block never needs history from an earlier
 * one); the gzip header goes first, the final block, CRC-32 and length
 * last (RFC 1952). node:zlib's streaming compressors work asynchronously,
 * which would reorder the body against the response's own writes; brotli
 * has no such concatenation, so streamed bodies are gzip only.
 */
export class BodyCompressor {
  private crc = 0;
  private size = 0;
  private started = false;
  ended = false;

  push(chunk: Uint8Array): Buffer {
    if (chunk.length === 0) return EMPTY;
    this.crc = zlib.crc32(chunk, this.crc);
    this.size = (this.size + chunk.length) >>> 0;
    const deflated = zlib.deflateRawSync(chunk, { level: GZIP_LEVEL, finishFlush: zlib.constants.Z_SYNC_FLUSH });
    if (this.started) return deflated;
    this.started = true;
    return Buffer.concat([GZIP_HEADER, deflated]);
  }

  /** The end of the stream (with its last chunk, if any). */
  end(chunk: Uint8Array = EMPTY): Buffer {
    const last = this.push(chunk);
    this.ended = true;
    const tail = Buffer.allocUnsafe(10);
    // An empty final block with fixed codes (BFINAL 1, BTYPE 01, end-of-block), then CRC-32 and ISIZE, little-endian.
    tail[0] = 0x03;
    tail[1] = 0x00;
    tail.writeUInt32LE(this.crc >>> 0, 2);
    tail.writeUInt32LE(this.size, 6);
    return Buffer.concat(this.started ? [last, tail] : [GZIP_HEADER, tail]);
  }
}

const EMPTY = Buffer.alloc(0);
/** ID1 ID2, CM 8 (deflate), no flags, no mtime, XFL 0, OS 255 (unknown). */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff]);

/** Whether this Node has zlib.crc32 (20.15+, 22.2+); without it streamed responses go uncompressed. */
export function streamingSupported(): boolean {
  return typeof (zlib as { crc32?: unknown }).crc32 === 'function';
}
