/**
 * The access log's hand-built line must be the line pino writes for the same
 * fields: same keys, same order, same values, valid JSON whatever a client
 * put in its request id or path. (The end-to-end line is checked in
 * admin.test.ts.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { accessFields, createAccessLog } from '../src/ops/access-log.js';
import { createBatchedLogger, createLogger } from '../src/log.js';
import type { Exchange } from '../src/front/exchange.js';

/** pino writing straight to `lines`: the reference. */
function capture(level = 'info'): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger(level, 'json', { write: (l: string) => void lines.push(l) }) };
}

/** The gateway's own kind of logger (batched bytes), whose lines `read()` hands over at once. */
function batched(level = 'info'): { read(): string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const log = createBatchedLogger(level, { write: (chunk: Buffer) => void lines.push(...chunk.toString('utf8').split(/(?<=\n)/)) });
  return {
    log,
    read() {
      log.flush(() => undefined);
      return lines.splice(0);
    },
  };
}

function exchange(fields: Partial<Exchange>): Exchange {
  return { requestId: 'r1', method: 'GET', path: '/a', subject: 'api.a', status: 200, bytesOut: 11, upstream: '', route: undefined, streamFailure: undefined, traceId: '', ...fields } as Exchange;
}

/** The line pino writes for the same request, through the generic path. */
function pinoLine(ex: Exchange, durationMs: number, aborted: boolean): string {
  const { lines, log } = capture();
  log.child({ kind: 'access' }).info(accessFields(ex, durationMs, aborted), 'request');
  return lines[0]!;
}

const withoutTime = (line: string) => line.replace(/"time":"[^"]*"/, '"time":0');

test('access log: the line written in place is the line pino writes, for NATS and override requests, aborted, cut off or traced', () => {
  const cases: Array<[Partial<Exchange>, number, boolean]> = [
    [{}, 1.234, false],
    [{ subject: '' }, 0, false],
    [{ route: { key: 'api.legacy' } as Exchange['route'], upstream: 'http://10.0.0.1:8080/', subject: 'api.legacy.x' }, 12.5, false],
    [{ route: { key: 'api.legacy' } as Exchange['route'], upstream: '' }, 3, true],
    [{ status: 200, streamFailure: 'stream-idle' }, 60000.129, false],
    [{ traceId: '4bf92f3577b34da6a3ce929d0e0e4736' }, 2, false],
    [{ requestId: 'a"b\\c', path: '/caf%C3%A9/"quoted"' }, 0.005, false],
  ];
  for (const [fields, ms, aborted] of cases) {
    const ex = exchange(fields);
    const { read, log } = batched();
    createAccessLog(log)!(ex, ms, aborted);
    const lines = read();
    assert.equal(lines.length, 1);
    assert.equal(withoutTime(lines[0]!), withoutTime(pinoLine(ex, ms, aborted)));
    const parsed = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.ok(Math.abs(Date.parse(parsed.time as string) - Date.now()) < 5000, 'an ISO timestamp of now');
  }
});

test('access log: any request id, path, subject or cut-off reason gives valid JSON that reads back exactly', () => {
  const { read, log } = batched();
  const access = createAccessLog(log)!;
  fc.assert(
    fc.property(
      fc.string({ unit: 'binary' }),
      fc.string({ unit: 'binary' }),
      fc.string(),
      fc.option(fc.string({ unit: 'grapheme' }), { nil: undefined }),
      fc.nat(),
      fc.double({ min: 0, max: 1e7, noNaN: true }),
      (requestId, path, subject, streamFailure, bytesOut, ms) => {
        const ex = exchange({ requestId, path, subject, streamFailure, bytesOut });
        access(ex, ms, false);
        const lines = read();
        assert.equal(lines.length, 1);
        const parsed = JSON.parse(lines[0]!) as Record<string, unknown>;
        assert.equal(parsed.requestId, requestId);
        assert.equal(parsed.path, path);
        assert.equal(parsed.subject, subject === '' ? undefined : subject);
        assert.equal(parsed.cutOff, streamFailure);
        assert.equal(withoutTime(lines[0]!), withoutTime(pinoLine(ex, ms, false)));
      },
    ),
    { numRuns: 500 },
  );
});

test('access log: a line larger than a whole batch still goes out, whole, in order', () => {
  const { read, log } = batched();
  const access = createAccessLog(log)!;
  access(exchange({ requestId: 'before' }), 1, false);
  const huge = exchange({ requestId: 'huge', path: '/' + 'é'.repeat(40_000) });
  access(huge, 1, false);
  access(exchange({ requestId: 'after' }), 1, false);
  const lines = read().map((l) => JSON.parse(l) as { requestId: string; path: string });
  assert.deepEqual(
    lines.map((l) => l.requestId),
    ['before', 'huge', 'after'],
  );
  assert.equal(lines[1]!.path, huge.path);
});

test('access log: lines wait at most 100 ms, then go out together', async () => {
  const chunks: string[] = [];
  const log = createBatchedLogger('info', { write: (chunk: Buffer) => void chunks.push(chunk.toString('utf8')) });
  const access = createAccessLog(log)!;
  for (let i = 0; i < 50; i++) access(exchange({ requestId: 'r' + i }), 1, false);
  log.info('not an access line');
  assert.equal(chunks.length, 0, 'nothing written yet');
  await new Promise((r) => setTimeout(r, 250));
  assert.equal(chunks.length, 1, 'one write for all of them');
  const lines = chunks[0]!
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as { msg: string });
  assert.equal(lines.length, 51);
  assert.equal(lines[50]!.msg, 'not an access line');
});

test('access log: nothing is built when the log level drops info lines', () => {
  const { read, log } = batched('warn');
  assert.equal(createAccessLog(log), undefined);
  assert.equal(read().length, 0);
});
