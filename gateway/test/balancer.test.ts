import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createBalancer } from '../src/http/upstream/balancer.js';
import { Upstream } from '../src/http/upstream/upstream.js';
import { BALANCING_POLICIES } from '../src/routes/route-schema.js';

/** Deterministic random numbers (mulberry32), so the statistics are stable. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const passive = { consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 10_000, maxEjectionPercent: 100, failureStatuses: [502, 503, 504] };
const breaker = { failureThreshold: 2, successThreshold: 1, openMs: 1000, maxOpenMs: 8000, halfOpenRequests: 1 };
const made: Upstream[] = [];
/** Each test backend's weight (weights are the route's, handed to the balancer). */
const weightOf = new Map<Upstream, number>();
function backends(weights: number[]): Upstream[] {
  const list = weights.map((w, i) => {
    const u = new Upstream(`http://10.9.9.${i + 1}:80/`, { pool: { maxConnections: 1, connectTimeoutMs: 100 }, passive, breaker });
    weightOf.set(u, w);
    return u;
  });
  made.push(...list);
  return list;
}
const weights = (ups: Upstream[]) => ups.map((u) => weightOf.get(u)!);
after(() => {
  for (const u of made) u.retire();
});

/** Picks `n` times with `concurrency` requests held in flight, as under real load. */
function simulate(policy: (typeof BALANCING_POLICIES)[number], ups: Upstream[], n: number, now: number, concurrency = 8): Map<Upstream, number> {
  const b = createBalancer(policy, ups, weights(ups), seeded(42));
  const counts = new Map<Upstream, number>(ups.map((u) => [u, 0]));
  const held: Upstream[] = [];
  for (let i = 0; i < n; i++) {
    const u = b.pick(now, undefined);
    assert.ok(u, 'something is available');
    counts.set(u, counts.get(u)! + 1);
    u.acquire();
    held.push(u);
    // The heaviest backend's requests finish fastest here, as real capacity would.
    if (held.length >= concurrency) held.shift()!.release('success', now, () => true);
  }
  for (const u of held) u.release('success', now, () => true);
  return counts;
}

for (const policy of BALANCING_POLICIES) {
  describe(`balancer conformance: ${policy}`, () => {
    test('traffic follows the weights', () => {
      const ups = backends([1, 2, 5]);
      const counts = simulate(policy, ups, 8000, 1);
      const shares = ups.map((u) => counts.get(u)! / 8000);
      const expected = [1 / 8, 2 / 8, 5 / 8];
      for (const [i, s] of shares.entries()) assert.ok(Math.abs(s - expected[i]!) < 0.08, `${policy}: share ${s.toFixed(3)} for weight ${weightOf.get(ups[i]!)}`);
    });

    test('never picks a backend excluded for this request (already tried)', () => {
      const ups = backends([1, 1, 1]);
      const b = createBalancer(policy, ups, weights(ups), seeded(7));
      for (let i = 0; i < 300; i++) {
        const exclude = new Set([ups[i % 3]!]);
        const u = b.pick(1, exclude);
        assert.ok(u !== undefined && !exclude.has(u));
      }
      assert.equal(b.pick(1, new Set(ups)), undefined);
    });

    test('skips ejected, unhealthy and open-breaker backends; takes them back when they recover', () => {
      const ups = backends([3, 1, 1]);
      const [a, bb, c] = ups as [Upstream, Upstream, Upstream];
      a.ejectedUntil = 1000; // ejected until t=1000
      bb.setHealthy(false); // failed its active checks
      const b = createBalancer(policy, ups, weights(ups), seeded(9));
      for (let i = 0; i < 200; i++) assert.equal(b.pick(500, undefined), c, 'only the available one');
      c.breaker!.onFailure(500);
      c.breaker!.onFailure(500); // opens the breaker
      assert.equal(b.pick(600, undefined), undefined, 'nothing available');
      bb.setHealthy(true);
      const later = simulate(policy, ups, 3000, 1200); // ejection over (t ≥ 1000); c's breaker, opened at 500 for 1000 ms, still open
      assert.ok(later.get(a)! > 0 && later.get(bb)! > 0, 'recovered backends are used again');
      assert.equal(later.get(c), 0, 'the open breaker keeps its backend out');
    });
  });
}

test('balancer: round-robin is smooth (nginx order for weights 5,1,1)', () => {
  const ups = backends([5, 1, 1]);
  const b = createBalancer('round-robin', ups, weights(ups), seeded(1));
  const names = Array.from({ length: 14 }, () => ups.indexOf(b.pick(1, undefined)!));
  assert.deepEqual(names, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
});

test('balancer: least-connections and p2c steer away from a slow backend', () => {
  for (const policy of ['least-connections', 'p2c'] as const) {
    const ups = backends([1, 1]);
    const [slow, fast] = ups as [Upstream, Upstream];
    const b = createBalancer(policy, ups, weights(ups), seeded(3));
    // The slow one never finishes its requests; the fast one finishes at once.
    let toSlow = 0;
    for (let i = 0; i < 200; i++) {
      const u = b.pick(1, undefined)!;
      u.acquire();
      if (u === slow) toSlow++;
      else fast.release('success', 1, () => true);
    }
    assert.ok(toSlow < 20, `${policy} sent ${toSlow}/200 to the slow backend`);
  }
});
