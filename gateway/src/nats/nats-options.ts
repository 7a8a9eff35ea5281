/**
 * Turns the validated configuration into nats.js connection options:
 * servers, reconnect policy, authentication and TLS.
 */
import { readFileSync } from 'node:fs';
import { credsAuthenticator, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { GatewayConfig } from '../config.js';

/**
 * Connection options for the gateway: keep reconnecting forever (the
 * gateway answers 503 meanwhile) and wait for the first connection instead
 * of failing when NATS is not up yet.
 */
export function natsConnectionOptions(config: GatewayConfig, name: string): NodeConnectionOptions {
  const opts: NodeConnectionOptions = {
    servers: [...config.natsServers],
    name,
    inboxPrefix: config.inboxPrefix,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    waitOnFirstConnect: true,
  };
  const { creds, user, pass, token } = config.auth;
  if (creds !== undefined) opts.authenticator = credsAuthenticator(readFileSync(creds));
  if (user !== undefined) {
    opts.user = user;
    opts.pass = pass;
  }
  if (token !== undefined) opts.token = token;
  if (config.tls !== undefined) {
    opts.tls = {
      ...(config.tls.ca !== undefined ? { caFile: config.tls.ca } : {}),
      ...(config.tls.cert !== undefined ? { certFile: config.tls.cert } : {}),
      ...(config.tls.key !== undefined ? { keyFile: config.tls.key } : {}),
    };
  }
  return opts;
}
