/**
 * What a route's policies add to a response head, whichever path wrote it
 * (a NATS reply, a stream head, an HTTP backend's response, a problem):
 * the fields the request's policies computed (CORS, RateLimit; ex.extraHeaders)
 * and whether the body is compressed.
 */
import type { HttpResponse } from 'uWebSockets.js';
import type { Exchange } from '../front/exchange.js';
import { BodyCompressor, streamingSupported, type Encoding } from './compression.js';

/** Set once: whether streamed bodies can be compressed on this Node (compression.ts). */
let streaming: boolean | undefined;

/**
 * Decides compression for a response: undefined (the policy does not apply),
 * 'vary' (it applies, this client takes none: say so to caches), or the
 * encoding. For a streamed body (`length` -1, or `streamed`) the exchange
 * gets its BodyCompressor.
 */
export function decideCompression(
  ex: Exchange,
  status: number,
  contentType: string | undefined,
  contentEncoding: string | undefined,
  cacheControl: string | undefined,
  length: number,
  streamed: boolean,
): Encoding | 'vary' | undefined {
  const policy = ex.policy?.compression;
  if (policy === undefined || !policy.applies(status, ex.method, contentType, contentEncoding, cacheControl, length)) return undefined;
  if (ex.encoding === undefined || length === 0) return 'vary';
  if (streamed) {
    streaming ??= streamingSupported();
    // Streamed bodies are gzip only (BodyCompressor).
    const gzip = ex.encoding === 'gzip' || policy.negotiate(ex.acceptEncoding, true) === 'gzip';
    if (!streaming || !gzip) return 'vary';
    ex.compressor = new BodyCompressor();
    return 'gzip';
  }
  return ex.encoding;
}

/** Writes the head fields that go with a compression decision. */
export function writeCompressionHead(res: HttpResponse, decision: Encoding | 'vary'): void {
  if (decision !== 'vary') res.writeHeader('content-encoding', decision);
  res.writeHeader('vary', 'Accept-Encoding');
}

/** A strong entity tag made weak: the compressed body is another representation (RFC 9110 §8.8.3). */
export function weakened(etag: string): string {
  return etag.startsWith('W/') ? etag : `W/${etag}`;
}

/** Writes the policies' own fields (CORS, RateLimit, a refusal's challenge). */
export function writeExtraHeaders(res: HttpResponse, ex: Exchange): void {
  const h = ex.extraHeaders;
  if (h === undefined) return;
  for (let i = 0; i < h.length; i += 2) res.writeHeader(h[i]!, h[i + 1]!);
}
