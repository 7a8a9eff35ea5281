/**
 * @natsgw/service-sdk: serve a plain Node `(req, res)` handler on a NATS
 * subject behind a natsgw gateway, and WebSockets beside it. The wire
 * protocol is exported separately from `@natsgw/service-sdk/protocol`.
 */
export {
  serve,
  DEFAULT_SERVICE_TIMEOUT_MS,
  type ServeOptions,
  type Service,
  type RequestListener,
  type ServiceLogger,
  type ConnectionListener,
  type WebSocketOptions,
  type UpgradeRejection,
} from './serve.js';
export { ServiceWebSocket } from './websocket.js';
export { DEFAULT_QUEUE } from './protocol/envelope.js';

export type { RequestIdentity } from './protocol/envelope.js';

declare module 'node:http' {
  interface IncomingMessage {
    /**
     * Under `serve()`: who the gateway verified the client to be (a route's
     * auth policy: a JWT or an API key), or undefined on a route without one.
     * Clients cannot set it (PROTOCOL.md §15).
     */
    auth?: import('./protocol/envelope.js').RequestIdentity;
  }
}
