/**
 * A command-line chat client for the demo's chat rooms: lines you type go
 * to the room, what the room says is printed.
 *
 *   node examples/dist/src/chat-client.js ws://127.0.0.1:8080/chat/lobby
 *   echo hello | node examples/dist/src/chat-client.js ws://127.0.0.1:8080/chat/lobby
 */
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const url = process.argv[2] ?? 'ws://127.0.0.1:8080/chat/lobby';
const ws = new WebSocket(url);
ws.on('message', (data) => console.log(String(data)));
ws.on('close', (code, reason) => {
  console.log(`[closed ${code}${reason.length > 0 ? ` ${reason}` : ''}]`);
  process.exit(0);
});
ws.on('error', (err) => {
  console.error(`cannot chat at ${url}: ${err.message}`);
  process.exit(1);
});
ws.on('open', () => {
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => ws.send(line));
  // Piped input: leave a moment for the room's answer, then close.
  lines.on('close', () => setTimeout(() => ws.close(1000), 500));
});
