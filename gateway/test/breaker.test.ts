import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CircuitBreaker, type BreakerState } from '../src/http/upstream/breaker.js';
import { RetryBudget } from '../src/http/upstream/retry-budget.js';

const settings = { failureThreshold: 3, successThreshold: 2, openMs: 1000, maxOpenMs: 4000, halfOpenRequests: 1 };

test('breaker: opens after failureThreshold failures in a row; a success in between resets the count', () => {
  const changes: string[] = [];
  const b = new CircuitBreaker({ ...settings }, (from: BreakerState, to: BreakerState) => changes.push(`${from}→${to}`));
  b.onFailure(0);
  b.onFailure(0);
  b.onSuccess();
  b.onFailure(0);
  b.onFailure(0);
  assert.equal(b.state, 'closed');
  b.onFailure(0);
  assert.equal(b.state, 'open');
  assert.deepEqual(changes, ['closed→open']);
});

test('breaker: fails fast while open, admits only halfOpenRequests trials, closes after successThreshold', () => {
  const b = new CircuitBreaker({ ...settings });
  for (let i = 0; i < 3; i++) b.onFailure(100);
  assert.equal(b.canAccept(500), false, 'open: no requests');
  assert.equal(b.nextTrialAt(), 1100);
  assert.equal(b.canAccept(1100), true, 'after openMs: half-open admits a trial');
  assert.equal(b.state, 'half-open');
  b.acquire();
  assert.equal(b.canAccept(1100), false, 'only one trial at a time');
  b.onSuccess();
  assert.equal(b.state, 'half-open', 'one success is not enough');
  assert.equal(b.canAccept(1100), true);
  b.acquire();
  b.onSuccess();
  assert.equal(b.state, 'closed');
});

test('breaker: a failed trial reopens it with a doubled wait, capped at maxOpenMs; closing resets the wait', () => {
  const b = new CircuitBreaker({ ...settings });
  for (let i = 0; i < 3; i++) b.onFailure(0);
  let t = 0;
  const waits: number[] = [];
  for (let trip = 0; trip < 4; trip++) {
    t = b.nextTrialAt();
    waits.push(b.currentOpenMs);
    assert.ok(b.canAccept(t));
    b.acquire();
    b.onFailure(t);
    assert.equal(b.state, 'open');
  }
  assert.deepEqual(waits, [1000, 2000, 4000, 4000]);
  t = b.nextTrialAt();
  for (let i = 0; i < 2; i++) {
    assert.ok(b.canAccept(t));
    b.acquire();
    b.onSuccess();
  }
  assert.equal(b.state, 'closed');
  for (let i = 0; i < 3; i++) b.onFailure(t);
  assert.equal(b.currentOpenMs, 1000, 'back to the base wait');
});

test('breaker: reading it (admitsAt, stateAt, Upstream.wouldAccept) changes nothing; canAccept agrees with admitsAt', () => {
  const b = new CircuitBreaker({ ...settings, halfOpenRequests: 1 });
  for (let i = 0; i < 3; i++) b.onFailure(0);
  assert.equal(b.admitsAt(500), false, 'open and waiting');
  assert.equal(b.admitsAt(1000), true, 'wait over: a trial would be admitted');
  assert.equal(b.stateAt(1000), 'half-open');
  assert.equal(b.state, 'open', 'reading moved nothing');
  assert.equal(b.canAccept(1000), true);
  assert.equal(b.state, 'half-open', 'picking does move it');
  b.acquire();
  assert.equal(b.admitsAt(1000), false, 'its one trial slot is taken');
  assert.equal(b.canAccept(1000), false);

  const u = new Upstream('http://10.9.8.3:80', {
    pool: { maxConnections: 1, connectTimeoutMs: 10 },
    passive: { consecutiveFailures: 100, baseEjectionMs: 1, maxEjectionMs: 1 },
    breaker: { ...settings },
  });
  for (let i = 0; i < 3; i++) {
    u.acquire();
    u.release('failure', Date.now(), () => false);
  }
  const later = Date.now() + 10_000;
  assert.equal(u.wouldAccept(later), true);
  assert.equal(u.breaker!.state, 'open', 'a view of the backend leaves its breaker alone');
  assert.equal(u.isAvailable(later), true);
  assert.equal(u.breaker!.state, 'half-open');
  u.retire();
});

test('breaker: a trial the client abandoned frees its slot without a verdict', () => {
  const b = new CircuitBreaker({ ...settings });
  for (let i = 0; i < 3; i++) b.onFailure(0);
  assert.ok(b.canAccept(1000));
  b.acquire();
  b.onAbandon();
  assert.equal(b.state, 'half-open');
  assert.ok(b.canAccept(1000), 'the slot is free again');
});

test('retry budget: retries are capped at a share of recent requests, with a per-second floor', () => {
  const budget = new RetryBudget({ percent: 20, minPerSecond: 1 });
  const now = 1_000_000;
  for (let i = 0; i < 1000; i++) budget.recordRequest(now);
  let granted = 0;
  while (budget.tryAcquire(now)) granted++;
  assert.equal(granted, 200, '20 % of 1000');
  const quiet = new RetryBudget({ percent: 20, minPerSecond: 1 });
  let floor = 0;
  while (quiet.tryAcquire(now)) floor++;
  assert.equal(floor, 10, 'one per second over the 10 s window');
  // Old requests leave the window.
  assert.equal(budget.tryAcquire(now + 11_000), true);
});

import { Upstream } from '../src/http/upstream/upstream.js';

test('passive health: N failures in a row eject; each ejection lasts longer, up to the cap; the share of ejected backends is bounded', () => {
  const passive = { consecutiveFailures: 2, baseEjectionMs: 100, maxEjectionMs: 250, maxEjectionPercent: 50, failureStatuses: [502] };
  const u = new Upstream('http://10.9.8.1:80', { pool: { maxConnections: 1, connectTimeoutMs: 10 }, passive });
  const fail = (now: number, mayEject = true) => {
    u.acquire();
    return u.release('failure', now, () => mayEject);
  };
  assert.equal(fail(0), false);
  assert.equal(fail(0), true, 'second failure in a row ejects');
  assert.equal(u.ejectedUntil, 100);
  u.acquire();
  u.release('success', 200, () => true);
  fail(200);
  fail(200);
  assert.equal(u.ejectedUntil, 400, 'second ejection: twice as long');
  fail(500);
  fail(500);
  assert.equal(u.ejectedUntil, 750, 'third: capped at maxEjectionMs');
  // A failure, a success, a failure: not "in a row".
  const v = new Upstream('http://10.9.8.2:80', { pool: { maxConnections: 1, connectTimeoutMs: 10 }, passive });
  for (const outcome of ['failure', 'success', 'failure', 'success'] as const) {
    v.acquire();
    v.release(outcome, 0, () => true);
  }
  assert.equal(v.ejections, 0);
  // When the route cannot spare it, it stays in.
  assert.equal(fail(2000, false), false);
  assert.equal(fail(2000, false), false);
  assert.equal(u.isEjected(2000), false);
  u.retire();
  v.retire();
});
