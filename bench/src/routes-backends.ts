/** The backends of `npm run bench:routes`: COUNT node:http servers in one process; prints "ports p1,p2,…". */
import { createServer, type Server } from 'node:http';

const count = Number(process.env.COUNT ?? 1);
const servers: Server[] = [];
for (let i = 0; i < count; i++) {
  const server = createServer((_req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.setHeader('x-backend', String(i));
    res.end('hello world');
  });
  server.keepAliveTimeout = 60_000;
  servers.push(server);
}
await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))));
process.stdout.write(`ports ${servers.map((s) => (s.address() as { port: number }).port).join(',')}\n`);
process.once('SIGTERM', () => process.exit(0));
