/**
 * The routes bucket, opened the same way by the gateway, the CLI and tests.
 * JetStream refuses to create a bucket that exists with other settings, so
 * the settings live here, once.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';

export const DEFAULT_ROUTES_BUCKET = 'natsgw-routes';

/** Versions of each key kept, so `natsgw routes get --revision` can look back. */
const HISTORY = 10;

/**
 * Opens the bucket, creating it when missing. (`Kvm.open` would not check
 * that it exists, and writes would then fail with a misleading error.)
 */
export function openRoutesBucket(nc: NatsConnection, bucket: string = DEFAULT_ROUTES_BUCKET): Promise<KV> {
  return new Kvm(nc).create(bucket, { history: HISTORY, description: 'natsgw HTTP overrides: key = subject, value = route JSON' });
}
