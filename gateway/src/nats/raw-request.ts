/**
 * Raw NATS mode, the gateway's side (the names: service-sdk's
 * protocol/raw.ts, PROTOCOL.md §12): a request's NATS headers, and a
 * reply's headers as name and values.
 */
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node';
import { isReservedRawHeader, RAW_HOST, RAW_METHOD, RAW_PATH, RAW_QUERY, RAW_REMOTE, RAW_REQUEST_ID, RAW_SCHEME } from '@natsgw/service-sdk/protocol';
import type { Exchange } from '../front/exchange.js';
import type { Forwarded } from '../front/forwarding.js';

/**
 * The client's request headers under their own (lower-case) names, less any
 * a client may not set (`Natsgw-*`, `Nats-*`: the gateway's and NATS's), the
 * forwarding headers an envelope service gets too, and the request line and
 * the gateway's facts as `Natsgw-*`.
 */
export function rawRequestHeaders(ex: Exchange, remote: string, forwarded: Forwarded): MsgHdrs {
  const h = natsHeaders();
  const hs = ex.headers;
  for (let i = 0; i < hs.length; i += 2) {
    const name = hs[i]!;
    if (!isReservedRawHeader(name)) h.append(name, hs[i + 1]!);
  }
  if (ex.body !== undefined && ex.body.length > 0) h.set('content-length', String(ex.body.length));
  h.set('x-forwarded-for', forwarded.forwardedFor);
  h.set('x-forwarded-proto', forwarded.scheme);
  h.set('x-forwarded-host', forwarded.host);
  h.set('x-request-id', ex.requestId);
  h.set(RAW_METHOD, ex.method);
  h.set(RAW_PATH, ex.path);
  h.set(RAW_QUERY, ex.query);
  h.set(RAW_REQUEST_ID, ex.requestId);
  h.set(RAW_REMOTE, remote);
  h.set(RAW_SCHEME, forwarded.scheme);
  h.set(RAW_HOST, forwarded.host);
  return h;
}

/** A reply's NATS headers as [name, values] (names as sent). */
export function* rawHeaderEntries(h: MsgHdrs): Generator<[string, string[]]> {
  for (const k of h.keys()) yield [k, h.values(k)];
}
