import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { decodeReply, decodeRequest, encodeReply, encodeRequest, ProtocolError, type RequestEnvelope } from '../src/protocol/index.js';

const raw = new Packr({ useRecords: false });
const pack = (x: unknown) => raw.pack(x);

/** The JSON form used in PROTOCOL.md: bin values are written {"$bin": "<hex>"}. */
function fromDocJson(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(fromDocJson);
  if (x !== null && typeof x === 'object') {
    const o = x as Record<string, unknown>;
    if (typeof o.$bin === 'string') return Buffer.from(o.$bin, 'hex');
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, fromDocJson(v)]));
  }
  return x;
}

function normalise(x: unknown): unknown {
  return JSON.parse(JSON.stringify(x, (_k, v: unknown) => (v instanceof Uint8Array || (v as { type?: string })?.type === 'Buffer' ? Buffer.from(v as Uint8Array).toString('hex') : v)));
}

test('protocol: every example in PROTOCOL.md decodes to the JSON beside it', () => {
  const doc = readFileSync(new URL('../../PROTOCOL.md', import.meta.url), 'utf8');
  const pairs = [...doc.matchAll(/```hex\n([\s\S]*?)```\s*```json\n([\s\S]*?)```/g)];
  assert.ok(pairs.length >= 4, `found ${pairs.length} examples`);
  for (const [, hex, json] of pairs) {
    const bytes = Buffer.from(hex!.replace(/\s+/g, ''), 'hex');
    const expected = fromDocJson(JSON.parse(json!)) as Record<string, unknown>;
    const decoded = 'method' in expected ? decodeRequest(bytes) : decodeReply(bytes);
    assert.notEqual(typeof decoded, 'string', `example decodes: ${String(decoded)}`);
    assert.deepEqual(normalise(decoded), normalise(expected));
    // and our encoder produces exactly these bytes
    const encoded = 'method' in expected ? encodeRequest(expected as unknown as RequestEnvelope) : encodeReply(expected as never);
    assert.equal(Buffer.from(encoded).toString('hex'), bytes.toString('hex'));
  }
});

const header = fc.tuple(fc.stringMatching(/^[a-z0-9-]{1,20}$/), fc.stringMatching(/^[\x20-\x7e]{0,40}$/));

test('protocol: replies round-trip, repeated headers kept in order', () => {
  fc.assert(
    fc.property(fc.integer({ min: 200, max: 599 }), fc.array(header, { maxLength: 10 }), fc.uint8Array({ maxLength: 200 }), (status, hs, body) => {
      const headers = hs.flat();
      const r = decodeReply(encodeReply({ v: 1, status, headers, body }));
      assert.notEqual(typeof r, 'string');
      if (typeof r === 'string') return;
      assert.equal(r.status, status);
      assert.deepEqual(r.headers, headers);
      assert.deepEqual(Buffer.from(r.body), Buffer.from(body));
    }),
  );
});

test('protocol: invalid replies are refused with a reason', () => {
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['not msgpack', Buffer.from('hello world'), /not a msgpack map/],
    ['empty', Buffer.alloc(0), /not a msgpack map/],
    ['an array', pack([1, 200]), /not a msgpack map/],
    ['the unused byte 0xc1', Buffer.from([0xc1]), /not a msgpack map/],
    ['a timestamp', pack(new Date(0)), /not a msgpack map/],
    ['truncated', encodeReply({ v: 1, status: 200, headers: [], body: Buffer.from('xyz') }).subarray(0, 10), /not a msgpack map/],
    ['unknown version', pack({ v: 2, status: 200 }), /version 2/],
    ['no version', pack({ status: 200 }), /version undefined/],
    ['status 1xx', pack({ v: 1, status: 101 }), /invalid status 101/],
    ['status 600', pack({ v: 1, status: 600 }), /invalid status 600/],
    ['status as text', pack({ v: 1, status: '200' }), /invalid status "200"/],
    ['fractional status', pack({ v: 1, status: 200.5 }), /invalid status/],
    ['odd headers', pack({ v: 1, status: 200, headers: ['a'] }), /flat list/],
    ['non-string header', pack({ v: 1, status: 200, headers: ['a', 1] }), /flat list/],
    ['CRLF in value', pack({ v: 1, status: 200, headers: ['x-a', 'ok\r\nset-cookie: evil=1'] }), /illegal value/],
    ['LF in value', pack({ v: 1, status: 200, headers: ['x-a', 'a\nb'] }), /illegal value/],
    ['NUL in value', pack({ v: 1, status: 200, headers: ['x-a', 'a\0b'] }), /illegal value/],
    ['space in name', pack({ v: 1, status: 200, headers: ['x a', 'b'] }), /illegal header name/],
    ['colon in name', pack({ v: 1, status: 200, headers: ['x:a', 'b'] }), /illegal header name/],
    ['CR in name', pack({ v: 1, status: 200, headers: ['x\ra', 'b'] }), /illegal header name/],
    ['empty name', pack({ v: 1, status: 200, headers: ['', 'b'] }), /illegal header name/],
    ['body is a number', pack({ v: 1, status: 200, body: 5 }), /not binary/],
  ];
  for (const [what, data, reason] of cases) {
    const r = decodeReply(data);
    assert.equal(typeof r, 'string', what);
    assert.match(r as string, reason, what);
  }
});

test('protocol: unknown fields are ignored; absent headers and body mean none', () => {
  const r = decodeReply(pack({ v: 1, status: 201, future: { x: 1 }, more: false, caps: ['stream'] }));
  assert.deepEqual(normalise(r), normalise({ v: 1, status: 201, headers: [], body: Buffer.alloc(0) }));
  const s = decodeReply(pack({ v: 1, status: 200, body: 'text body' }));
  assert.equal(Buffer.from((s as { body: Uint8Array }).body).toString(), 'text body');
  const req = decodeRequest(pack({ v: 1, method: 'GET', path: '/', someday: 'maybe' }));
  assert.equal(req.query, '');
  assert.deepEqual(req.headers, []);
});

test('protocol: decodeRequest refuses what a v1 gateway never sends', () => {
  assert.throws(() => decodeRequest(Buffer.from('junk')), (e: unknown) => e instanceof ProtocolError && e.code === 'bad-envelope');
  assert.throws(() => decodeRequest(pack({ v: 7, method: 'GET', path: '/' })), (e: unknown) => e instanceof ProtocolError && e.code === 'unsupported-version');
  assert.throws(() => decodeRequest(pack({ v: 1, method: 'GET', path: 'no-slash' })), ProtocolError);
  assert.throws(() => decodeRequest(pack({ v: 1, method: 1, path: '/' })), ProtocolError);
  assert.throws(() => decodeRequest(pack({ v: 1, method: 'GET', path: '/', headers: ['a'] })), ProtocolError);
});

test('protocol: a __proto__ key in a reply cannot pollute objects', () => {
  const evil = Buffer.from('84a17601a6737461747573ccc8a95f5f70726f746f5f5f81a178a178a4626f6479c400', 'hex');
  decodeReply(evil);
  assert.equal(({} as Record<string, unknown>).x, undefined);
});
