import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import fc from 'fast-check';
import { headersObject } from '../src/node-adapter.js';

/** What node:http itself builds for these raw headers. */
function nodeHeaders(raw: string[]): Record<string, unknown> {
  const req = new IncomingMessage(new Socket());
  const dest: Record<string, unknown> = {};
  const add = (req as unknown as { _addHeaderLine(f: string, v: string, d: object): void })._addHeaderLine.bind(req);
  for (let i = 0; i < raw.length; i += 2) add(raw[i]!, raw[i + 1]!, dest);
  return dest;
}

const names = fc.constantFrom(
  'set-cookie',
  'cookie',
  'content-type',
  'content-length',
  'host',
  'authorization',
  'user-agent',
  'etag',
  'x-a',
  'x-b',
  'accept',
  'via',
  'X-Mixed-Case',
  '__proto__',
  'constructor',
  'toString',
);
const values = fc.string({ maxLength: 12 });

test('adapter: req.headers follows node:http merge rules exactly', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(names, values), { maxLength: 14 }), (pairs) => {
      const raw = pairs.flat();
      assert.deepEqual({ ...headersObject(raw) }, { ...nodeHeaders(raw) });
    }),
    { numRuns: 3000 },
  );
});
