/**
 * Example "legacy" backend: an ordinary HTTP server that is not on NATS yet.
 * The demo runs two of them and points an override (api.legacy) at both.
 *
 *   PORT=9101 NAME=legacy-1 node examples/dist/src/legacy-server.js
 */
import { createServer } from 'node:http';

const name = process.env.NAME ?? 'legacy';
const server = createServer((req, res) => {
  if (req.url === '/health') {
    res.end('ok');
    return;
  }
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ from: name, path: req.url, forwardedFor: req.headers['x-forwarded-for'], via: req.headers.via }));
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.error(`${name}: http://127.0.0.1:${(server.address() as { port: number }).port}`);
});
process.once('SIGTERM', () => server.close(() => process.exit(0)));
process.once('SIGINT', () => server.close(() => process.exit(0)));
