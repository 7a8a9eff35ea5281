/**
 * @natsgw/gateway: HTTP on the front, NATS request/reply on the back.
 */
export { startGateway, type Gateway, type GatewayDeps } from './gateway.js';
export { loadConfig, ConfigError, configSchema, type GatewayConfig, type GatewayOptions } from './config.js';
export { FAILURES, type FailureCode } from './errors.js';
export { loadUws, UwsLoadError } from './front/uws.js';
export { openRoutesBucket, DEFAULT_ROUTES_BUCKET } from './routes/routes-bucket.js';
export { parseRoute, routeSchema, type RouteConfig, type RouteOptions } from './routes/route-schema.js';
