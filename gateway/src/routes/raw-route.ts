/**
 * One version of a raw NATS route: its subject tree stays on NATS, but in
 * raw mode (the request body is the NATS payload, the request line and
 * headers NATS headers; nats/raw-request.ts) instead of the envelope, so any
 * NATS service can answer it. Requests keep the version they started with.
 */
import type { CompiledPolicy } from '../policy/route-policy.js';
import type { RawRouteConfig } from './route-schema.js';

export class RawRoute {
  readonly kind = 'nats-raw';
  policy: CompiledPolicy | undefined = undefined;

  constructor(
    readonly key: string,
    readonly revision: number,
    readonly config: RawRouteConfig,
  ) {}
}
