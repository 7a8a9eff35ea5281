/**
 * NATS connections for one-shot CLI commands: one attempt with a short
 * timeout, and failures turned into one clear line (unlike the gateway,
 * which keeps retrying).
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import type { GatewayConfig } from '../config.js';
import { natsConnectionOptions } from '../nats/nats-options.js';
import { openRoutesBucket } from '../routes/routes-bucket.js';
import { CommandError } from './command.js';

export async function connectOnce(config: GatewayConfig, name: string, timeoutMs = 5000): Promise<NatsConnection> {
  try {
    return await connect({ ...natsConnectionOptions(config, name), waitOnFirstConnect: false, maxReconnectAttempts: 0, reconnect: false, timeout: timeoutMs });
  } catch (err) {
    throw new CommandError(`cannot connect to NATS at ${config.natsServers.join(',')}: ${(err as Error).message}`, 1);
  }
}

export async function openBucket(nc: NatsConnection, bucket: string, replicas = 1): Promise<KV> {
  try {
    return await openRoutesBucket(nc, bucket, replicas);
  } catch (err) {
    throw new CommandError(`cannot open the routes bucket ${bucket} (is JetStream enabled on the server?): ${(err as Error).message}`, 1);
  }
}
