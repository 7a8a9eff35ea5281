import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import {
  decodeFrame,
  decodeReply,
  decodeRequest,
  parseIdentity,
  encodeCancel,
  encodeClose,
  encodeControl,
  encodeMsg,
  encodeTopicFrame,
  encodeCredit,
  encodeData,
  encodeReply,
  encodeRequest,
  ProtocolError,
  type ReplyEnvelope,
  type RequestEnvelope,
} from '../src/protocol/index.js';

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
  assert.ok(pairs.length >= 21, `found ${pairs.length} examples`);
  for (const [, hex, json] of pairs) {
    const bytes = Buffer.from(hex!.replace(/\s+/g, ''), 'hex');
    const expected = fromDocJson(JSON.parse(json!)) as Record<string, unknown>;
    if ('t' in expected) {
      // A stream frame (§7.1): decoded without `v`, encoded by its own encoder.
      const frame = decodeFrame(bytes);
      assert.notEqual(typeof frame, 'string', `frame decodes: ${String(frame)}`);
      assert.deepEqual(normalise({ v: 2, ...(frame as object) }), normalise(expected));
      const e = expected as { t: string; seq: number; body: Buffer; more: boolean; bin: boolean; n: number; inbox?: string; reason: string; code: number; topic: string };
      const encoded =
        e.t === 'data'
          ? encodeData(e.seq, [e.body], e.body.length, e.more)
          : e.t === 'credit'
            ? encodeCredit(e.n, e.inbox)
            : e.t === 'cancel'
              ? encodeCancel(e.reason)
              : e.t === 'msg'
                ? encodeMsg(e.seq, e.body, e.bin, e.more)
                : e.t === 'close'
                  ? encodeClose(e.code, e.reason)
                  : e.t === 'ping' || e.t === 'pong'
                    ? encodeControl(e.t, e.body)
                    : encodeTopicFrame(e.t as 'sub', e.topic);
      assert.equal(encoded.toString('hex'), bytes.toString('hex'));
      continue;
    }
    const decoded = 'method' in expected ? decodeRequest(bytes) : decodeReply(bytes);
    assert.notEqual(typeof decoded, 'string', `example decodes: ${String(decoded)}`);
    // (identity is auth parsed by the decoder, not a field on the wire.)
    const { identity: _identity, ...onWire } = decoded as RequestEnvelope;
    assert.deepEqual(normalise(onWire), normalise(expected));
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
    ['truncated', encodeReply({ v: 1, status: 200, headers: [], body: Buffer.from('xyz') }).subarray(0, 10), /truncated/],
    ['unknown version', pack({ v: 3, status: 200 }), /version 3/],
    ['more in a v1 reply', pack({ v: 1, status: 200, more: true, inbox: '_INBOX.x.1' }), /more or inbox with protocol version 1/],
    ['a v2 head with more names no inbox', pack({ v: 2, status: 200, more: true }), /has no inbox/],
    ['a stream inbox in the JetStream API', pack({ v: 2, status: 200, more: true, inbox: '$JS.API.STREAM.DELETE.X' }), /literal subject outside/],
    ['a wildcard stream inbox', pack({ v: 2, status: 200, more: true, inbox: '_INBOX.*' }), /literal subject/],
    ['more that is not a bool', pack({ v: 2, status: 200, more: 1, inbox: '_INBOX.x' }), /more must be a bool/],
    ['no version', pack({ status: 200 }), /version undefined/],
    ['status 1xx', pack({ v: 1, status: 101 }), /invalid status 101/],
    ['status 600', pack({ v: 1, status: 600 }), /invalid status 600/],
    ['status as text', pack({ v: 1, status: '200' }), /invalid status \(not an integer\)/],
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
  assert.throws(
    () => decodeRequest(Buffer.from('junk')),
    (e: unknown) => e instanceof ProtocolError && e.code === 'bad-envelope',
  );
  assert.throws(
    () => decodeRequest(pack({ v: 7, method: 'GET', path: '/' })),
    (e: unknown) => e instanceof ProtocolError && e.code === 'unsupported-version',
  );
  assert.throws(() => decodeRequest(pack({ v: 1, method: 'GET', path: 'no-slash' })), ProtocolError);
  assert.throws(() => decodeRequest(pack({ v: 1, method: 1, path: '/' })), ProtocolError);
  assert.throws(() => decodeRequest(pack({ v: 1, method: 'GET', path: '/', headers: ['a'] })), ProtocolError);
});

/** msgpack bytes, written out by hand where an encoder would refuse or normalise. */
const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');
const V1_STATUS_200 = 'a17601a6737461747573ccc8'; // "v" 1 "status" 200, without the map header

test('protocol: a few bytes declaring a huge array or map are refused without allocating for them', () => {
  const bombs: Array<[string, Uint8Array]> = [
    ['array32 of 2^32-1 headers', hex(`83 ${V1_STATUS_200} a7 68656164657273 dd ffffffff`)],
    ['array32 in an unknown field', hex(`83 ${V1_STATUS_200} a3 78797a dd 0fffffff 00`)],
    ['map32 in an unknown field', hex(`83 ${V1_STATUS_200} a3 78797a df 0fffffff 00 00`)],
    ['map32 as the envelope', hex('df 7fffffff a1 76 01')],
    ['str32 of 4 GiB', hex(`83 ${V1_STATUS_200} a4 626f6479 db ffffffff 61`)],
    ['bin32 of 4 GiB', hex(`83 ${V1_STATUS_200} a4 626f6479 c6 ffffffff 61`)],
  ];
  for (const [what, data] of bombs) {
    assert.ok(data.length <= 30, `${what}: ${data.length} bytes`);
    global.gc?.();
    const before = process.memoryUsage();
    const r = decodeReply(data);
    const grew = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers - before.heapUsed - before.arrayBuffers;
    assert.equal(typeof r, 'string', what);
    assert.match(r as string, /longer than the message|truncated/, what);
    assert.ok(grew < 8 * 1024 * 1024, `${what}: heap grew ${grew} bytes`);
    assert.throws(() => decodeRequest(data), ProtocolError, what);
  }
});

test('protocol: 64-bit integers are numbers when they fit, refused when they do not; never a BigInt', () => {
  const u64 = (n: bigint) => {
    const b = Buffer.alloc(9);
    b[0] = 0xcf;
    b.writeBigUInt64BE(n, 1);
    return b.toString('hex');
  };
  const i64 = (n: bigint) => {
    const b = Buffer.alloc(9);
    b[0] = 0xd3;
    b.writeBigInt64BE(n, 1);
    return b.toString('hex');
  };
  const ok = decodeReply(hex(`82 a1 76 ${u64(1n)} a6 737461747573 ${i64(204n)}`));
  assert.equal(typeof ok, 'object');
  assert.equal((ok as { status: number }).status, 204);
  assert.equal(typeof (ok as { status: unknown }).status, 'number');
  for (const big of [u64(2n ** 53n), u64(2n ** 64n - 1n), i64(-(2n ** 53n)), i64(2n ** 63n - 1n)]) {
    const r = decodeReply(hex(`82 a1 76 01 a6 737461747573 ${big}`));
    assert.match(r as string, /integer out of range/);
  }
  const req = decodeRequest(hex(`84 a1 76 ${u64(1n)} a6 6d6574686f64 a3 474554 a4 70617468 a1 2f a9 74696d656f75744d73 ${u64(5000n)}`));
  assert.equal(req.timeoutMs, 5000);
  assert.throws(() => decodeRequest(hex(`84 a1 76 01 a6 6d6574686f64 a3 474554 a4 70617468 a1 2f a9 74696d656f75744d73 ${u64(2n ** 60n)}`)), /integer out of range/);
});

test('protocol: extension types, deep nesting, invalid UTF-8, duplicate fields and trailing bytes are refused', () => {
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['fixext in an unknown field', hex(`83 ${V1_STATUS_200} a1 78 d4 01 00`), /extension types/],
    ['ext8 as the body', hex(`83 ${V1_STATUS_200} a4 626f6479 c7 01 05 00`), /not binary/],
    ['nesting 40 deep', hex(`83 ${V1_STATUS_200} a1 78 ${'91'.repeat(40)} 00`), /nested too deeply/],
    ['invalid UTF-8 in a header value', hex(`83 ${V1_STATUS_200} a7 68656164657273 92 a1 78 a2 c328`), /not UTF-8/],
    ['status twice', hex(`83 ${V1_STATUS_200} a6 737461747573 cd 01f4`), /status twice/],
    ['bytes after the map', hex(`82 ${V1_STATUS_200} c0`), /bytes after/],
    ['a key that is not a string', hex(`83 ${V1_STATUS_200} 01 02`), /keys must be strings/],
    ['1001 header fields', Buffer.concat([hex(`83 ${V1_STATUS_200} a7 68656164657273 dd 000007d2`), Buffer.from('a178a0'.repeat(1001), 'hex')]), /more than 1000 header fields/],
  ];
  for (const [what, data, reason] of cases) assert.match(decodeReply(data) as string, reason, what);
  // A reply with 1000 fields is fine.
  const thousand = decodeReply(Buffer.concat([hex(`83 ${V1_STATUS_200} a7 68656164657273 dd 000007d0`), Buffer.from('a178a0'.repeat(1000), 'hex')]));
  assert.equal((thousand as { headers: string[] }).headers.length, 2000);
});

test('protocol: decodeRequest checks envelopes as strictly as the gateway checks replies', () => {
  const base = {
    v: 1,
    id: 'r1',
    method: 'GET',
    path: '/a',
    query: 'x=1',
    headers: ['host', 'h'],
    body: Buffer.alloc(0),
    remote: '10.0.0.1',
    scheme: 'http',
    host: 'h',
    root: 'api',
    subject: 'api.a',
    timeoutMs: 1000,
  };
  assert.equal(decodeRequest(pack(base)).path, '/a');
  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['method with a space', { method: 'GE T' }, /method .* is not a token/],
    ['method with CRLF', { method: 'GET\r\nX: y' }, /not a token/],
    ['empty method', { method: '' }, /not a token/],
    ['path with a space', { path: '/a b' }, /visible ASCII/],
    ['path with CR', { path: '/a\rb' }, /visible ASCII/],
    ['raw non-ASCII path', { path: '/ü' }, /visible ASCII/],
    ['query with LF', { query: 'a=\nb' }, /query must be visible ASCII/],
    ['header name with a space', { headers: ['x a', 'b'] }, /illegal header name/],
    ['header value with CRLF', { headers: ['x-a', 'b\r\nset-cookie: x'] }, /illegal value/],
    ['header value with NUL', { headers: ['x-a', 'b\0'] }, /illegal value/],
    ['odd header list', { headers: ['x-a'] }, /flat list/],
    ['non-string header', { headers: ['x-a', 5] }, /flat list/],
    ['scheme', { scheme: 'ftp' }, /scheme/],
    ['id with a space', { id: 'a b' }, /request id/],
    ['id too long', { id: 'x'.repeat(300) }, /request id/],
    ['host with CRLF', { host: 'h\r\nx: y' }, /host holds control characters/],
    ['negative timeout', { timeoutMs: -1 }, /negative/],
    ['fractional timeout', { timeoutMs: 1.5 }, /timeoutMs must be an integer/],
    ['body as a number', { body: 5 }, /not binary/],
    ['method as a number', { method: 1 }, /method must be a string/],
  ];
  for (const [what, change, reason] of bad) {
    assert.throws(
      () => decodeRequest(pack({ ...base, ...change })),
      (e: unknown) => e instanceof ProtocolError && e.code === 'bad-envelope' && reason.test(e.message),
      what,
    );
  }
});

test('protocol: decoding arbitrary bytes never throws anything but a ProtocolError (replies: never throws)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const r = decodeReply(bytes);
      assert.ok(typeof r === 'string' || typeof r === 'object');
      try {
        decodeRequest(bytes);
      } catch (e) {
        assert.ok(e instanceof ProtocolError, String(e));
      }
    }),
    { numRuns: 20_000 },
  );
  // Mutations of a valid reply: every prefix and every single-byte change.
  const good = encodeReply({ v: 1, status: 200, headers: ['content-type', 'text/plain', 'x-b', 'é'], body: Buffer.from('hello') });
  for (let i = 0; i <= good.length; i++) decodeReply(good.subarray(0, i));
  fc.assert(
    fc.property(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 }), (at, b) => {
      const m = Buffer.from(good);
      m[at] = b;
      const r = decodeReply(m);
      if (typeof r === 'object') assert.ok(r.status >= 200 && r.status <= 599);
    }),
    { numRuns: 5000 },
  );
});

test('protocol: any valid envelope survives encode → decode unchanged (short, long, ASCII and UTF-8 strings)', () => {
  const tchars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".split('');
  const token = fc.array(fc.constantFrom(...tchars), { minLength: 1, maxLength: 40 }).map((a) => a.join(''));
  const value = fc.string({
    unit: fc.oneof(
      fc.constantFrom('\t'),
      fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
      fc.constantFrom('é', 'ü', '€', '😀'),
    ),
    maxLength: 60,
  });
  const visible = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });
  fc.assert(
    fc.property(token, fc.array(fc.tuple(token, value), { maxLength: 8 }), fc.uint8Array({ maxLength: 40 }), fc.integer({ min: 200, max: 599 }), visible, (method, pairs, body, status, query) => {
      const headers = pairs.flat();
      const reply = decodeReply(encodeReply({ v: 1, status, headers, body }));
      assert.equal(typeof reply, 'object', String(reply));
      assert.deepEqual((reply as { headers: string[] }).headers, headers);
      assert.deepEqual(Buffer.from((reply as { body: Uint8Array }).body), Buffer.from(body));
      const env: RequestEnvelope = {
        v: 1,
        id: 'id1',
        method,
        path: '/' + query.replace(/^\/*/, ''),
        query,
        headers,
        body,
        remote: '::1',
        scheme: 'https',
        host: 'h',
        root: 'api',
        subject: 'api.x',
        timeoutMs: 1234,
      };
      assert.deepEqual(normalise(decodeRequest(encodeRequest(env))), normalise(env));
    }),
    { numRuns: 3000 },
  );
});

test('protocol: the hand-written encoder writes exactly the bytes msgpackr writes, for any envelope (sizes across every header boundary)', () => {
  // The encoder msgpackr was configured as before envelope.ts wrote its own.
  const reference = new Packr({ useRecords: false, variableMapSize: true });
  const anyString = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.string({ unit: 'grapheme', minLength: 20, maxLength: 300 }),
    fc.constantFrom('', 'x'.repeat(31), 'x'.repeat(32), 'é'.repeat(16), 'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(65_535), 'x'.repeat(65_536)),
  );
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.constantFrom(255, 256, 65_535, 65_536, 200_000).map((n) => new Uint8Array(n).fill(7)),
  );
  const count = fc.oneof(fc.integer({ min: 0, max: 0x7f }), fc.constantFrom(0x80, 0xff, 0x100, 0xffff, 0x10000, 1024 * 1024, 0xffffffff));
  const headers = fc.array(anyString, { maxLength: 40 });
  fc.assert(
    fc.property(
      anyString,
      anyString,
      headers,
      bytes,
      count,
      count,
      fc.option(fc.array(anyString, { maxLength: 3 }), { nil: undefined }),
      fc.option(count, { nil: undefined }),
      fc.option(fc.boolean(), { nil: undefined }),
      (id, path, h, body, status, timeoutMs, caps, credit, more) => {
        const env: RequestEnvelope = { v: 2, id, method: 'GET', path, query: id, headers: h, body, remote: path, scheme: 'http', host: id, root: 'api', subject: path, timeoutMs };
        if (caps !== undefined) env.caps = caps;
        if (credit !== undefined) env.credit = credit;
        if (more !== undefined) env.more = more;
        assert.deepEqual(Buffer.from(encodeRequest(env)), Buffer.from(reference.pack(env)));
        const reply: ReplyEnvelope = { v: 1, status, headers: h, body };
        if (more !== undefined) reply.more = more;
        if (caps !== undefined) reply.inbox = id;
        assert.deepEqual(Buffer.from(encodeReply(reply)), Buffer.from(reference.pack(reply)));
      },
    ),
    { numRuns: 2000 },
  );
  // Views handed out earlier stay intact while later messages are written.
  const first = encodeReply({ v: 1, status: 200, headers: ['a', 'b'], body: Buffer.from('one') });
  const copy = Buffer.from(first);
  for (let i = 0; i < 10_000; i++) encodeReply({ v: 1, status: 200, headers: ['a', 'b'.repeat(i % 300)], body: Buffer.alloc(i % 5000) });
  assert.deepEqual(Buffer.from(first), copy);
});

test('protocol: a __proto__ key in a reply cannot pollute objects', () => {
  const evil = Buffer.from('84a17601a6737461747573ccc8a95f5f70726f746f5f5f81a178a178a4626f6479c400', 'hex');
  decodeReply(evil);
  assert.equal(({} as Record<string, unknown>).x, undefined);
});

test('protocol: stream frames that break §7.1 are refused with a reason, never thrown', () => {
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['not a map', pack([1]), /not a msgpack map/],
    ['v 1', pack({ v: 1, t: 'data', seq: 1, body: Buffer.alloc(0) }), /unsupported protocol version 1/],
    ['unknown type', pack({ v: 2, t: 'teleport' }), /unknown type "teleport"/],
    ['data without seq', pack({ v: 2, t: 'data', body: Buffer.alloc(1) }), /no seq/],
    ['data seq 0', pack({ v: 2, t: 'data', seq: 0 }), /no seq/],
    ['credit without n', pack({ v: 2, t: 'credit' }), /no n/],
    ['negative credit', pack({ v: 2, t: 'credit', n: -5 }), /no n/],
    ['credit to a wildcard inbox', pack({ v: 2, t: 'credit', n: 1, inbox: '_INBOX.>' }), /not a literal subject/],
    ['credit to the JetStream API', pack({ v: 2, t: 'credit', n: 1, inbox: '$JS.API.STREAM.DELETE.KV_x' }), /not a literal subject/],
    ['a field twice', hex('84 a1 76 02 a1 74 a6 637265646974 a1 6e 01 a1 6e 02'), /n twice/],
    ['bin32 of 4 GiB', hex('84 a1 76 02 a1 74 a4 64617461 a3 736571 01 a4 626f6479 c6 ffffffff'), /not valid msgpack/],
    ['more that is not a bool', pack({ v: 2, t: 'data', seq: 1, more: 1 }), /not valid msgpack/],
    ['bytes after the map', Buffer.concat([encodeCredit(1), Buffer.from([0])]), /bytes after/],
  ];
  for (const [what, data, reason] of cases) {
    const f = decodeFrame(data);
    assert.equal(typeof f, 'string', what);
    assert.match(f as string, reason, what);
  }
  assert.deepEqual(decodeFrame(encodeCancel('x'.repeat(1000))), { t: 'cancel', reason: 'x'.repeat(200) }, 'a long reason is cut to 200 characters');
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => void decodeFrame(bytes)),
    { numRuns: 5000 },
  );
});

test('protocol: WebSocket frames round-trip, and bad ones are refused with a reason (§14)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 2 ** 32 - 1 }), fc.uint8Array({ maxLength: 300 }), fc.boolean(), fc.boolean(), (seq, body, bin, more) => {
      const f = decodeFrame(encodeMsg(seq, body, bin, more));
      assert.deepEqual(f, { t: 'msg', seq, body: Buffer.from(body), bin, more });
    }),
  );
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['msg without seq', pack({ v: 2, t: 'msg', body: Buffer.from('x') }), /no seq/],
    ['close code below 1000', pack({ v: 2, t: 'close', code: 999, reason: '' }), /code from 1000 to 4999/],
    ['close code above 4999', pack({ v: 2, t: 'close', code: 5000, reason: '' }), /code from 1000 to 4999/],
    ['close reason over 123 bytes', pack({ v: 2, t: 'close', code: 1000, reason: 'é'.repeat(62) }), /longer than 123 bytes/],
    ['a wildcard topic', pack({ v: 2, t: 'sub', topic: 'api.>' }), /no valid topic/],
    ['an empty topic token', pack({ v: 2, t: 'sub', topic: 'api..x' }), /no valid topic/],
    ['a topic of 201 characters', pack({ v: 2, t: 'unsub', topic: 'a'.repeat(201) }), /no valid topic/],
    ['a ping over 125 bytes', pack({ v: 2, t: 'ping', body: Buffer.alloc(126) }), /longer than 125 bytes/],
    ['bin that is not a bool', pack({ v: 2, t: 'msg', seq: 1, body: Buffer.from('x'), bin: 1 }), /not valid msgpack/],
  ];
  for (const [what, data, reason] of cases) {
    const f = decodeFrame(data);
    assert.equal(typeof f, 'string', what);
    assert.match(f as string, reason, what);
  }
  // A close reason is cut on a character boundary, never inside one.
  const long = decodeFrame(encodeClose(1000, 'é'.repeat(100)));
  assert.equal(typeof long === 'string' ? long : long.t === 'close' && long.reason, 'é'.repeat(61));
  // A 101 is a WebSocket accept only with v 2, an inbox and a credit.
  assert.match(decodeReply(pack({ v: 2, status: 101, inbox: '_INBOX.s.1' })) as string, /invalid status 101/);
  assert.match(decodeReply(pack({ v: 2, status: 101, credit: 10 })) as string, /invalid status 101/);
  assert.match(decodeReply(pack({ v: 2, status: 101, inbox: '_INBOX.s.1', credit: 10, body: Buffer.from('x') })) as string, /has a body/);
  assert.equal((decodeReply(pack({ v: 2, status: 101, inbox: '_INBOX.s.1', credit: 10 })) as ReplyEnvelope).credit, 10);
});

test('protocol: the auth field (§15) must be an identity; anything else is a bad envelope', () => {
  const base = { v: 1, id: 'r1', method: 'GET', path: '/', query: '', headers: [], body: new Uint8Array(), remote: '127.0.0.1', scheme: 'http', host: 'h', root: 'api', subject: 'api', timeoutMs: 1 };
  const ok = decodeRequest(encodeRequest({ ...base, auth: '{"method":"jwt","sub":"alice","claims":{"sub":"alice","scope":"read"}}' }));
  assert.deepEqual(parseIdentity(ok.auth!), { method: 'jwt', sub: 'alice', claims: { sub: 'alice', scope: 'read' } });
  for (const auth of [
    'not json',
    '{}',
    '{"method":"basic","sub":"a","claims":{}}',
    '{"method":"jwt","sub":1,"claims":{}}',
    '{"method":"jwt","sub":"a","claims":[]}',
    '{"method":"jwt","sub":"a","claims":{}}\u0001',
  ]) {
    assert.throws(
      () => decodeRequest(encodeRequest({ ...base, auth })),
      (e: Error) => e.message.includes('auth'),
      auth,
    );
  }
});
