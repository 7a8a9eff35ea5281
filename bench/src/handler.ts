import type { IncomingMessage, ServerResponse } from 'node:http';

/** The one handler every contender serves: a small text response. */
export function hello(_req: IncomingMessage, res: ServerResponse): void {
  res.setHeader('content-type', 'text/plain');
  res.end('hello world');
}
