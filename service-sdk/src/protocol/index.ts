/**
 * The wire protocol, shared by the gateway and services: envelopes, the
 * path ↔ subject mapping and problem bodies. Specified in PROTOCOL.md.
 */
export * from './envelope.js';
export * from './subject.js';
export * from './request-path.js';
export * from './problem.js';
export * from './http-syntax.js';
export { MsgpackError } from './msgpack-reader.js';
export * from './stream.js';
export * from './micro.js';
export * from './raw.js';
export * from './trace-context.js';
export * from './ws.js';
