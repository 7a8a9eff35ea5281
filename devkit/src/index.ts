export { startNatsServer, type NatsServer, type NatsServerOptions } from './nats-server.js';
export { freePort, freePorts } from './ports.js';
export { connectRaw, type RawNats, type RawMessage } from './raw-nats.js';
