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
import { createLogger } from '../src/log.js';
import type { Exchange } from '../src/front/exchange.js';

function capture(level = 'info'): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger(level, 'json', { write: (l: string) => void lines.push(l) }) };
}

function exchange(fields: Partial<Exchange>): Exchange {
  return { requestId: 'r1', method: 'GET', path: '/a', subject: 'api.a', status: 200, bytesOut: 11, upstream: '', route: undefined, streamFailure: undefined, ...fields } as Exchange;
}

/** The line pino writes for the same request, through the generic path. */
function pinoLine(ex: Exchange, durationMs: number, aborted: boolean): string {
  const { lines, log } = capture();
  log.child({ kind: 'access' }).info(accessFields(ex, durationMs, aborted), 'request');
  return lines[0]!;
}

const withoutTime = (line: string) => line.replace(/"time":"[^"]*"/, '"time":0');

test('access log: the template writes the line pino would, for NATS and override requests, aborted or cut off', () => {
  const cases: Array<[Partial<Exchange>, number, boolean]> = [
    [{}, 1.234, false],
    [{ subject: '' }, 0, false],
    [{ route: { key: 'api.legacy' } as Exchange['route'], upstream: 'http://10.0.0.1:8080/', subject: 'api.legacy.x' }, 12.5, false],
    [{ route: { key: 'api.legacy' } as Exchange['route'], upstream: '' }, 3, true],
    [{ status: 200, streamFailure: 'stream-idle' }, 60000.129, false],
    [{ requestId: 'a"b\\c', path: '/caf%C3%A9/"quoted"' }, 0.005, false],
  ];
  for (const [fields, ms, aborted] of cases) {
    const ex = exchange(fields);
    const { lines, log } = capture();
    createAccessLog(log)!(ex, ms, aborted);
    assert.equal(lines.length, 1);
    assert.equal(withoutTime(lines[0]!), withoutTime(pinoLine(ex, ms, aborted)));
    const parsed = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.ok(Math.abs(Date.parse(parsed.time as string) - Date.now()) < 5000, 'an ISO timestamp of now');
  }
});

test('access log: any request id, path, subject or cut-off reason gives valid JSON that reads back exactly', () => {
  const { lines, log } = capture();
  const access = createAccessLog(log)!;
  fc.assert(
    fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), fc.string(), fc.option(fc.string({ unit: 'grapheme' }), { nil: undefined }), (requestId, path, subject, streamFailure) => {
      lines.length = 0;
      const ex = exchange({ requestId, path, subject, streamFailure });
      access(ex, 1, false);
      const parsed = JSON.parse(lines[0]!) as Record<string, unknown>;
      assert.equal(parsed.requestId, requestId);
      assert.equal(parsed.path, path);
      assert.equal(parsed.subject, subject === '' ? undefined : subject);
      assert.equal(parsed.cutOff, streamFailure);
      assert.equal(withoutTime(lines[0]!), withoutTime(pinoLine(ex, 1, false)));
    }),
    { numRuns: 500 },
  );
});

test('access log: nothing is built when the log level drops info lines', () => {
  const { lines, log } = capture('warn');
  assert.equal(createAccessLog(log), undefined);
  assert.equal(lines.length, 0);
});
