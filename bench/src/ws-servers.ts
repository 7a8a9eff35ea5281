/**
 * The two WebSocket contenders of `npm run bench:ws`, each in its own process:
 *   node ws-servers.js plain <port>   a plain `ws` server in Node
 *   node ws-servers.js sdk            an SDK service on api.ws behind natsgw (NATS_URL)
 * Both do the same work: echo every message; a connection to /ws/room joins
 * the room ("joined" once it is in); a broadcast reaches every member. The
 * plain server broadcasts what a connection to /ws/control sends, by looping
 * over its members; behind natsgw a broadcast is one NATS publish on the
 * room's topic, made by the bench itself. Prints `ready`.
 */
import { WebSocketServer, type WebSocket } from 'ws';
import { serve } from '@natsgw/service-sdk';

const [mode, port] = process.argv.slice(2) as ['plain' | 'sdk', string | undefined];

if (mode === 'plain') {
  const room = new Set<WebSocket>();
  const wss = new WebSocketServer({ port: Number(port), host: '127.0.0.1', perMessageDeflate: false });
  wss.on('connection', (ws, req) => {
    if (req.url === '/ws/control') {
      ws.on('message', (data, isBinary) => {
        for (const member of room) member.send(data, { binary: isBinary });
      });
      return;
    }
    if (req.url === '/ws/room') {
      room.add(ws);
      ws.on('close', () => room.delete(ws));
      ws.send('joined');
      return;
    }
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  wss.on('listening', () => process.stdout.write('ready\n'));
} else {
  const service = await serve((_req, res) => res.end(), {
    nats: process.env.NATS_URL!,
    subject: 'api.ws',
    websocket: (ws, req) => {
      if (req.url === '/ws/room') {
        void ws.subscribe('room').then(() => ws.send('joined'));
        return;
      }
      ws.on('message', (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
    },
  });
  process.once('SIGTERM', () => void service.drain().then(() => process.exit(0)));
  process.stdout.write('ready\n');
}
