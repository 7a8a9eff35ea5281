/**
 * The mount registry against a real nats-server, with hand-written
 * announcements from a client that plays by no rules.
 */
import { after, before, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { connectRaw, startNatsServer, type NatsServer, type RawNats } from '@natsgw/devkit';
import { MAX_MOUNTS, MAX_TTL_MS, MountRegistry } from '../src/mounts.js';

let ns: NatsServer;
let nc: NatsConnection;
let raw: RawNats;
before(async () => {
  ns = await startNatsServer({ jetstream: false });
  nc = await connect({ servers: ns.url });
  raw = await connectRaw(ns.url);
});
after(async () => {
  raw.close();
  await nc.close();
  await ns.dispose();
});

const announce = (mount: string, body: object) => raw.publish(`_NATSGW.mounts.announce.${mount}`, JSON.stringify({ v: 1, state: 'up', ttlMs: 15_000, ...body }));

async function registry(mount: string, refused: string[] = [], heartbeatMs = 50): Promise<MountRegistry> {
  const r = new MountRegistry(nc, mount, `id${Math.random().toString(36).slice(2)}`, { heartbeatMs, discoveryMs: 50, readyTimeoutMs: 1000, onRefused: (_s, why) => void refused.push(why) });
  await r.start();
  await r.announceUp();
  return r;
}

test('mounts: an announcement whose payload names another mount than its subject, or is malformed, is refused', async () => {
  const refused: string[] = [];
  const r = await registry('api.a', refused);
  try {
    announce('api.a.b', { mount: 'api.a.c', id: 'x1' }); // forged: subject says api.a.b
    announce('api.a.b', { mount: 'api.a.b', id: 'bad id with spaces' });
    announce('api.a.b', { mount: 'api.a.b', id: 'x2', state: 'sideways' });
    raw.publish('_NATSGW.mounts.announce.api.a.b', 'not json');
    announce('api.a.d', { mount: 'api.a.d', id: 'ok1' });
    await raw.flush();
    await nc.flush();
    assert.equal(r.deeperMountFor('api.a.c.x'), undefined, 'the forged mount is not learnt');
    assert.equal(r.deeperMountFor('api.a.b.x'), undefined);
    assert.equal(r.deeperMountFor('api.a.d.x'), 'api.a.d', 'a well-formed one is');
    assert.deepEqual(refused, ['its mount is not the one its subject names', 'not a mount announcement', 'not a mount announcement', 'not JSON']);
  } finally {
    r.stop();
  }
});

test('mounts: TTLs are clamped, and expired entries are dropped on every heartbeat, even for subjects never requested', async () => {
  mock.timers.enable({ apis: ['Date'], now: Date.now() });
  const r = await registry('api.t');
  try {
    announce('api.t.forever', { mount: 'api.t.forever', id: 'f1', ttlMs: 1e15 });
    announce('api.t.short', { mount: 'api.t.short', id: 's1', ttlMs: 1 });
    await raw.flush();
    await nc.flush();
    assert.equal(r.size, 2);
    mock.timers.tick(500);
    assert.equal(r.deeperMountFor('api.t.short.x'), 'api.t.short', 'a 1 ms TTL counts as the 1 s minimum');
    mock.timers.tick(MAX_TTL_MS);
    // Neither is requested again: the heartbeat (real time, every 50 ms) prunes them.
    const until = performance.now() + 2000;
    while (r.size > 0 && performance.now() < until) await new Promise((res) => setTimeout(res, 20));
    assert.equal(r.size, 0, 'a TTL of 10^15 ms counts as the 60 s maximum');
  } finally {
    mock.timers.reset();
    r.stop();
  }
});

test(`mounts: the registry holds at most ${MAX_MOUNTS} deeper mounts`, async () => {
  const refused: string[] = [];
  const r = await registry('api.n', refused, 60_000);
  try {
    for (let i = 0; i < MAX_MOUNTS + 50; i++) announce(`api.n.m${i}`, { mount: `api.n.m${i}`, id: 'i1' });
    await raw.flush();
    await nc.flush();
    assert.equal(r.size, MAX_MOUNTS);
    assert.equal(refused.length, 50);
    assert.match(refused[0]!, /more than 1024 mounts/);
  } finally {
    r.stop();
  }
});

test('mounts: a starting mount waits until every instance of the mounts above acknowledges it; one that never does bounds the wait and is named', async () => {
  const outer1 = await registry('api.w');
  const outer2 = await registry('api.w');
  const top = await registry('api');
  try {
    const inner = new MountRegistry(nc, 'api.w.inner', 'inner1', { heartbeatMs: 60_000, discoveryMs: 50, readyTimeoutMs: 500 });
    await inner.start();
    const missing = await inner.announceUp();
    assert.deepEqual(missing, [], 'all three outer instances acknowledged');
    for (const o of [outer1, outer2, top]) assert.equal(o.deeperMountFor('api.w.inner.x'), 'api.w.inner', 'each knows it');
    inner.stop();

    // An instance that answers discovery as api.w but never acknowledges.
    raw.subscribe('_NATSGW.mounts.query.api.w.>', (m) => raw.publish(m.reply!, JSON.stringify({ v: 1, mount: 'api.w', id: 'ghost', state: 'up', ttlMs: 15_000 })));
    await raw.flush();
    const late = new MountRegistry(nc, 'api.w.late', 'late1', { heartbeatMs: 60_000, discoveryMs: 50, readyTimeoutMs: 300 });
    await late.start();
    const t0 = performance.now();
    assert.deepEqual(await late.announceUp(), ['ghost']);
    const waited = performance.now() - t0;
    assert.ok(waited >= 250 && waited < 1500, `waited ${waited} ms`);
    late.stop();
  } finally {
    outer1.stop();
    outer2.stop();
    top.stop();
  }
});
