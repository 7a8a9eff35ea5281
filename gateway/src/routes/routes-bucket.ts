/**
 * The routes bucket, opened the same way by the gateway, the CLI and tests.
 *
 * An existing bucket is used as it is (whoever created it chose its
 * settings); a missing one is created with these. JetStream refuses to
 * create over an existing bucket with other settings, which is why
 * "create" is never used to open.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';

export const DEFAULT_ROUTES_BUCKET = 'natsgw-routes';

/** Versions of each key kept, so earlier values can be looked up. */
const HISTORY = 10;

/**
 * Opens the bucket, creating it (with `replicas` copies) when missing.
 * (`Kvm.open` alone does not check that it exists: writes would then fail
 * with a misleading "jetstream is not enabled".)
 */
export async function openRoutesBucket(nc: NatsConnection, bucket: string = DEFAULT_ROUTES_BUCKET, replicas = 1): Promise<KV> {
  const kvm = new Kvm(nc);
  try {
    const kv = await kvm.open(bucket);
    await kv.status(); // throws StreamNotFoundError when missing
    return kv;
  } catch (err) {
    if ((err as { name?: string }).name !== 'StreamNotFoundError') throw err;
  }
  return kvm.create(bucket, { history: HISTORY, replicas, description: 'natsgw HTTP overrides: key = subject, value = route JSON' });
}
