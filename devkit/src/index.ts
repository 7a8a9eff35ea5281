export { startNatsServer, type NatsServer, type NatsServerOptions } from './nats-server.js';
export { freePort } from './ports.js';
export { connectRaw, type RawNats, type RawMessage } from './raw-nats.js';
