/** Contender (a): the handler on node:http directly. Prints its port. */
import { createServer } from 'node:http';
import { hello } from './handler.js';
import { large } from './large-handler.js';

// /big/… is the large-body handler; everything else the small one.
const server = createServer((req, res) => (req.url?.startsWith('/big/') ? large(req, res) : hello(req, res)));
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`port ${(server.address() as { port: number }).port}\n`);
});
process.once('SIGTERM', () => process.exit(0));
