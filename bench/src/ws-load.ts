/**
 * The load side of `npm run bench:ws`, in its own process:
 *   node ws-load.js echo <url> <connections> <seconds>
 *     each connection sends a 32-byte message and waits for its echo, again
 *     and again; prints {"roundTrips":n,"seconds":s}
 *   node ws-load.js fanout <url> <connections> <messages>
 *     opens the connections (to the room), prints `ready` once every one has
 *     joined, then counts messages; prints {"deliveries":n,"ms":t} when every
 *     connection has all of them (t: first to last delivery)
 */
import WebSocket from 'ws';

const [mode, url, n, x] = process.argv.slice(2) as [string, string, string, string];
const connections = Number(n);

function open(u: string, onMessage?: (data: Buffer) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(u, { perMessageDeflate: false });
    // Listening from the start: a server may send before 'open' has been handled here.
    if (onMessage !== undefined) ws.on('message', onMessage);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

if (mode === 'echo') {
  const seconds = Number(x);
  const payload = Buffer.alloc(32, 0x61);
  const sockets = await Promise.all(Array.from({ length: connections }, () => open(url)));
  let roundTrips = 0;
  let running = true;
  for (const ws of sockets) {
    ws.on('message', () => {
      roundTrips++;
      if (running) ws.send(payload);
    });
  }
  const started = performance.now();
  for (const ws of sockets) ws.send(payload);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  running = false;
  const elapsed = (performance.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify({ roundTrips, seconds: elapsed })}\n`);
  for (const ws of sockets) ws.terminate();
  process.exit(0);
} else {
  const messages = Number(x);
  let joined = 0;
  let deliveries = 0;
  let first = 0;
  const expected = connections * messages;
  const sockets: WebSocket[] = [];
  const onMessage = (data: Buffer): void => {
    if (data.length === 6 && data.toString() === 'joined') {
      if (++joined === connections) process.stdout.write('ready\n');
      return;
    }
    if (joined < connections) return; // a broadcast before everyone is in: not counted
    if (deliveries++ === 0) first = performance.now();
    if (deliveries === expected) {
      process.stdout.write(`${JSON.stringify({ deliveries, ms: performance.now() - first })}\n`);
      for (const s of sockets) s.terminate();
      process.exit(0);
    }
  };
  // Opened a few at a time: a thousand handshakes at once would measure the accept queue.
  for (let i = 0; i < connections; i += 50) {
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(50, connections - i) }, () => open(url, onMessage)))));
  }
}
