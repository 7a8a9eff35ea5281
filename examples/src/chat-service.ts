/**
 * Example service "chat": WebSocket chat rooms on api.chat, beside a plain
 * Express app on the same mount (same queue group). `ws://host/chat/<room>`
 * joins a room; every message is broadcast to everyone in it, whichever
 * gateway they are connected to (a topic per room). `GET /chat/` serves a
 * small page that does the same from a browser.
 *
 *   NATS_URL=nats://127.0.0.1:4222 node examples/dist/src/chat-service.js
 */
import express from 'express';
import { serve, type ServiceWebSocket } from '@natsgw/service-sdk';

const ROOM_RE = /^\/chat\/([A-Za-z0-9_-]{1,64})\/?(?:\?.*)?$/;
const PAGE = `<!doctype html><meta charset="utf-8"><title>natsgw chat</title>
<input id="line" autofocus placeholder="say something, press enter" size="60"><pre id="log"></pre>
<script>
const room = new URLSearchParams(location.search).get('room') || 'lobby';
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/chat/' + room);
const log = (t) => (document.getElementById('log').textContent += t + '\\n');
ws.onmessage = (e) => log(e.data);
ws.onclose = (e) => log('[closed ' + e.code + ']');
document.getElementById('line').onkeydown = (e) => { if (e.key === 'Enter') { ws.send(e.target.value); e.target.value = ''; } };
</script>`;

export function createChatApp(): express.Express {
  const app = express();
  app.get('/chat/', (_req, res) => res.type('html').send(PAGE));
  app.get('/chat/rooms', (_req, res) => res.json({ hint: 'connect to ws://<gateway>/chat/<room>' }));
  return app;
}

/** The `ws` package's connection callback: it would run unchanged behind `new WebSocketServer()`, topics aside. */
export function onChatConnection(broadcast: (room: string, text: string) => void) {
  return (ws: ServiceWebSocket, req: { url?: string }): void => {
    const room = ROOM_RE.exec(req.url ?? '')?.[1];
    if (room === undefined) return ws.close(4004, 'rooms are /chat/<letters, digits, - or _>');
    const name = `guest-${Math.random().toString(36).slice(2, 6)}`;
    void ws.subscribe(room).then(() => {
      ws.send(`* you are ${name} in ${room}`);
      broadcast(room, `* ${name} joined`);
    });
    ws.on('message', (data, isBinary) => {
      if (isBinary) return ws.send('* text only, please');
      broadcast(room, `${name}: ${String(data).slice(0, 1000)}`);
    });
    ws.on('close', () => broadcast(room, `* ${name} left`));
  };
}

const isMain = process.argv[1] !== undefined && import.meta.url === new URL(process.argv[1], 'file:').href;
if (isMain) {
  const holder: { service?: Awaited<ReturnType<typeof serve>> } = {};
  const service = await serve(createChatApp(), {
    nats: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
    subject: 'api.chat',
    // A connection taken in the instant before serve() resolves broadcasts nothing until it has.
    websocket: onChatConnection((room, text) => holder.service?.broadcast(room, text)),
  });
  holder.service = service;
  console.log(`chat service on ${service.subject}`);
  process.once('SIGTERM', () => void service.drain().then(() => process.exit(0)));
}
