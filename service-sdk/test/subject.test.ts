import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAX_SEGMENTS, MAX_SUBJECT_BYTES, pathToSubject, subjectToPath, subjectToSegments, isValidRoot } from '../src/protocol/index.js';

const roots = fc.constantFrom('api', 'api.staging', 'a-b_c.d1');
const safeChar = fc.constantFrom(...'abcXYZ019-_'.split(''));
const plainSegment = fc.string({ unit: safeChar, minLength: 1, maxLength: 12 });
const anyBytes = fc.uint8Array({ maxLength: 12 });

/** Writes bytes as a path segment, percent-encoding each byte or not at random (and in random hex case) where that is legal. */
function toRawSegment(bytes: Uint8Array, choices: boolean[]): string {
  let s = '';
  bytes.forEach((b, i) => {
    const ch = String.fromCharCode(b);
    const mustEncode = b === 0x25 || b === 0x2f || b === 0x3f || b === 0x23 || b < 0x21 || b > 0x7e;
    const hex = b.toString(16).padStart(2, '0');
    if (mustEncode || choices[i % choices.length]) s += '%' + (choices[(i + 1) % choices.length] ? hex.toUpperCase() : hex);
    else s += ch;
  });
  return s;
}

test('subject: plain paths map token for token (stable)', () => {
  fc.assert(
    fc.property(roots, fc.array(plainSegment, { minLength: 1, maxLength: 10 }), (root, segs) => {
      assert.equal(pathToSubject(root, '/' + segs.join('/')), root + '.' + segs.join('.'));
    }),
  );
  assert.equal(pathToSubject('api', '/'), 'api');
  assert.equal(pathToSubject('api', '/foo/bar'), 'api.foo.bar');
});

test('subject: decoded segments survive the round trip (reversible)', () => {
  fc.assert(
    fc.property(roots, fc.array(anyBytes, { minLength: 1, maxLength: 8 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), (root, segments, choices) => {
      const path = '/' + segments.map((b) => toRawSegment(b, choices)).join('/');
      const subject = pathToSubject(root, path);
      assert.equal(typeof subject, 'string', `mapping ${path}`);
      // '/' alone means "no segments"; a single empty segment never arises.
      const expected = segments.length === 1 && segments[0]!.length === 0 ? [] : segments;
      const back = subjectToSegments(root, subject as string);
      assert.deepEqual(
        back?.map((b) => Buffer.from(b).toString('hex')),
        expected.map((b) => Buffer.from(b).toString('hex')),
      );
      // and the canonical path maps to the very same subject
      assert.equal(pathToSubject(root, subjectToPath(root, subject as string)!), subject);
    }),
    { numRuns: 500 },
  );
});

test('subject: no path yields a wildcard, an empty token or white space (never a wildcard)', () => {
  const nasty = fc.constantFrom('.', '*', '>', ' ', '\t', '%', '%2e', '%2E', '%2F', '%2f', '..', '/', '//', 'ü', '\u2028', '%00', '=', '%3D', '$', 'a');
  fc.assert(
    fc.property(roots, fc.array(fc.oneof(nasty, fc.string()), { maxLength: 12 }), (root, parts) => {
      const subject = pathToSubject(root, '/' + parts.join(''));
      if (subject === 'bad-percent-encoding' || subject === 'too-many-segments' || subject === 'subject-too-long') return;
      const tokens = subject.split('.');
      for (const t of tokens) {
        assert.notEqual(t, '');
        assert.notEqual(t, '*');
        assert.notEqual(t, '>');
        assert.doesNotMatch(t, /[\s*>]/u);
      }
    }),
    { numRuns: 2000 },
  );
});

test('subject: every mapping stays under the root (always under the root)', () => {
  fc.assert(
    fc.property(roots, fc.string({ maxLength: 80 }), (root, tail) => {
      const subject = pathToSubject(root, '/' + tail);
      if (!subject.startsWith(root)) {
        assert.ok(['bad-percent-encoding', 'too-many-segments', 'subject-too-long'].includes(subject), subject);
        return;
      }
      assert.ok(subject === root || subject.startsWith(root + '.'));
      // the tokens after the root are exactly the path's segments
      const rootTokens = root.split('.').length;
      const segCount = tail === '' ? 0 : tail.split('/').length;
      assert.equal(subject.split('.').length - rootTokens, segCount);
    }),
    { numRuns: 2000 },
  );
});

test('subject: documented examples', () => {
  const cases: Array<[string, string]> = [
    ['/', 'api'],
    ['/foo/bar', 'api.foo.bar'],
    ['/foo/', 'api.foo.='],
    ['//', 'api.=.='],
    ['/a.b', 'api.a=2Eb'],
    ['/%2e%2e/etc', 'api.=2E=2E.etc'],
    ['/..', 'api.=2E=2E'],
    ['/a%2Fb', 'api.a=2Fb'],
    ['/*', 'api.=2A'],
    ['/>', 'api.=3E'],
    ['/a%20b', 'api.a=20b'],
    ['/100%25', 'api.100=25'],
    ['/%41', 'api.A'],
    ['/ü', 'api.=C3=BC'],
    ['/a=b', 'api.a=3Db'],
  ];
  for (const [path, subject] of cases) assert.equal(pathToSubject('api', path), subject, path);
  assert.equal(subjectToPath('api', 'api.a=2Fb'), '/a%2Fb');
  assert.equal(subjectToPath('api', 'api.a=2Eb'), '/a.b');
});

test('subject: malformed percent-encoding is refused', () => {
  for (const p of ['/%', '/%2', '/%zz', '/a%g1']) assert.equal(pathToSubject('api', p), 'bad-percent-encoding', p);
});

test('subject: too many segments or too long a subject is refused', () => {
  assert.equal(pathToSubject('api', '/a'.repeat(MAX_SEGMENTS)), 'api' + '.a'.repeat(MAX_SEGMENTS));
  assert.equal(pathToSubject('api', '/a'.repeat(MAX_SEGMENTS + 1)), 'too-many-segments');
  assert.equal(pathToSubject('api', '/.'.repeat(MAX_SEGMENTS + 1)), 'too-many-segments');
  assert.equal(pathToSubject('api', '/' + 'x'.repeat(MAX_SUBJECT_BYTES)), 'subject-too-long');
  assert.equal(pathToSubject('api', '/' + '.'.repeat(MAX_SUBJECT_BYTES / 3)), 'subject-too-long');
});

test('subject: tokens no path produces are rejected when decoding', () => {
  for (const s of ['api.=2e', 'api.=41', 'api.a.b*', 'api..a', 'api.=4', 'other.a']) {
    assert.equal(subjectToSegments('api', s), undefined, s);
  }
});

test('subject: roots', () => {
  for (const r of ['api', 'api.staging', 'A_b-1.x']) assert.ok(isValidRoot(r), r);
  for (const r of ['', '.', 'api.', 'api..x', 'api.*', 'api.>', 'a b', 'api.=2E']) assert.ok(!isValidRoot(r), r);
});
