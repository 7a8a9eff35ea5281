import type { IncomingMessage, ServerResponse } from 'node:http';

/** The large-body contenders' handler: GET …/dl?mib=N streams N MiB, POST …/up reads the body and answers its length. */
const CHUNK = Buffer.alloc(64 * 1024, 'x');

export function large(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'POST') {
    let bytes = 0;
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => res.end(String(bytes)));
    return;
  }
  const mib = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('mib') ?? 100);
  res.setHeader('content-type', 'application/octet-stream');
  res.setHeader('content-length', String(mib * 1024 * 1024));
  let left = mib * 16;
  const pump = (): void => {
    while (left > 0) {
      left--;
      if (!res.write(CHUNK)) return void res.once('drain', pump);
    }
    res.end();
  };
  res.on('close', () => (left = 0));
  pump();
}
