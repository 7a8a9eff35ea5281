/**
 * Protocol v2 end to end (ISSUE: streaming): streamed responses (SSE, large
 * downloads), streamed request bodies (large uploads, multipart), flow
 * control both ways, and what happens when either end goes away mid-stream.
 * Real nats-server, real Express apps, real HTTP clients; services that get
 * killed or measured run in their own process (fixtures/stream-service.ts).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Agent, FormData, request, setGlobalDispatcher } from 'undici';
import express from 'express';
import multer from 'multer';
import Fastify from 'fastify';
import Koa from 'koa';
import { connect } from '@nats-io/transport-node';
import { decodeFrame } from '@natsgw/service-sdk/protocol';
import { deleteRoute, putRoute, routesBucket } from './backends.js';
import { eventually, logTail, startStack, type Stack } from './helpers.js';
import { PATTERN_CHUNK, patternChunk } from './fixtures/pattern.js';

const MiB = 1024 * 1024;
const SERVICE = fileURLToPath(new URL('./fixtures/stream-service.js', import.meta.url));
const BULK_CLIENT = fileURLToPath(new URL('./fixtures/bulk-client.js', import.meta.url));

// A stream that stalls must fail its own test, saying which request stalled,
// not wait out undici's 300 s defaults and take the whole file past the
// runner's --test-timeout (one CI run lost every test after the multer one
// that way). The slowest wait here is the 11.5 s handler pause below.
setGlobalDispatcher(new Agent({ headersTimeout: 30_000, bodyTimeout: 30_000 }));

async function withStack(t: TestContext, flags: Record<string, unknown>, fn: (s: Stack) => Promise<void>): Promise<void> {
  const s = await startStack({ timeout: 10_000, accessLog: false, ...flags });
  t.after(() => s.close());
  await fn(s);
}

/** The stream-service fixture in its own process; killed when the test ends. */
async function spawnService(t: TestContext, natsUrl: string, mount: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [SERVICE, natsUrl, mount], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    // (A later resolve or reject of a settled promise does nothing.)
    const timer = setTimeout(() => reject(new Error(`service ${mount} did not print ready within 20 s`)), 20_000);
    child.stdout!.on('data', (d: Buffer) => {
      if (!d.toString().includes('ready')) return;
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`service exited with ${code}`));
    });
  });
  return child;
}

/** Runs fixtures/bulk-client.js (a download or an upload of `mib` MiB) and returns the line it prints. */
function runBulkClient(mode: 'down' | 'up', url: string, mib: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BULK_CLIENT, mode, url, String(mib)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`bulk client (${mode}) exited with ${code}`))));
  });
}

/** Resident memory of a process, in bytes (Linux). */
function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

/**
 * Samples the memory of `pids` every 50 ms until stopped: the baseline and
 * every sample; for this process also what `overrun()` says it holds at
 * that moment (see retainedHere).
 */
function sampleMemory(pids: number[], overrun: () => number): { stop(): Array<{ base: number; samples: number[]; overrun: number[] }> } {
  const read = (pid: number) => (pid === process.pid ? retainedHere() : rssOf(pid));
  const series = pids.map((pid) => ({ pid, base: read(pid), samples: [] as number[], overrun: [] as number[] }));
  const timer = setInterval(() => {
    for (const s of series) {
      s.samples.push(read(s.pid));
      s.overrun.push(s.pid === process.pid ? overrun() : 0);
    }
  }, 50);
  return {
    stop() {
      clearInterval(timer);
      return series;
    },
  };
}

// This process (the gateway) is measured by what it retains: a full GC, then
// the JS heap and ArrayBuffer memory in use. RSS would also count the
// garbage of the body's chunk copies, and when that is collected depends on
// how busy the machine is (one CI run saw RSS +25 MiB late in an upload, and
// +139 MiB under load with the client in its own process), while a body held
// whole or a growing queue is retained memory, which this sees. Two
// collections: V8 frees dead ArrayBuffers on a helper thread after a full
// GC, and the next GC first waits for that, so after one GC the count still
// holds the chunks that just died (a CI run saw 26 → 46 MiB in a download
// that retains 1 MiB).
setFlagsFromString('--expose-gc');
const fullGc = runInNewContext('gc') as () => void;
function retainedHere(): number {
  fullGc();
  fullGc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** SHA-256 of `mib` MiB of the fixtures' byte pattern (fixtures/pattern.ts). */
function patternSha(mib: number): string {
  const h = createHash('sha256');
  for (let i = 0; i < (mib * MiB) / PATTERN_CHUNK; i++) h.update(patternChunk(i));
  return h.digest('hex');
}

/** An upload body of `mib` MiB of the pattern, counting what the client has produced. */
function patternBody(mib: number, counter: { sent: number } = { sent: 0 }, delayAfter = Infinity): Readable {
  return Readable.from(
    (async function* () {
      for (let i = 0; i < (mib * MiB) / PATTERN_CHUNK; i++) {
        if (counter.sent >= delayAfter) await new Promise((r) => setTimeout(r, 20));
        counter.sent += PATTERN_CHUNK;
        yield patternChunk(i);
      }
    })(),
  );
}

/** Counts the messages the gateway receives on its reply inbox (frames from services). */
async function countGatewayInbox(t: TestContext, s: Stack): Promise<{ readonly n: number }> {
  const spy = await connect({ servers: s.ns.url });
  t.after(() => spy.close());
  const counter = { n: 0 };
  spy.subscribe('_INBOX.>', {
    callback: () => {
      counter.n++;
    },
  });
  await spy.flush();
  return counter;
}

test('streaming: SSE — the first event arrives before the handler ends, 1,000 events in order, client abort stops the handler', async (t) => {
  await withStack(t, {}, async (s) => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let writtenAt = 0;
    let stoppedAt = 0;
    let writesAfterClose = 0;
    const app = express();
    app.get('/sse/first', async (_req, res) => {
      res.setHeader('content-type', 'text/event-stream');
      res.write('data: first\n\n');
      writtenAt = Date.now();
      await released; // the handler does not end until the client has the first event
      res.end('data: last\n\n');
    });
    app.get('/sse/many', (_req, res) => {
      res.setHeader('content-type', 'text/event-stream');
      let i = 0;
      const next = (): void => {
        for (let k = 0; k < 10 && i < 1000; k++) res.write(`id: ${i}\ndata: event ${i++}\n\n`);
        if (i < 1000) setImmediate(next);
        else res.end();
      };
      next();
    });
    app.get('/sse/forever', (req, res) => {
      res.setHeader('content-type', 'text/event-stream');
      res.flushHeaders();
      let closed = false;
      const timer = setInterval(() => {
        if (closed) writesAfterClose++;
        res.write(`data: ${Date.now()}\n\n`);
      }, 10);
      req.on('close', () => {
        closed = true;
        stoppedAt = Date.now();
        clearInterval(timer);
      });
    });
    await s.serve(app, { nats: s.ns.url, subject: 'api.sse' });

    const first = await request(`${s.base}/sse/first`);
    assert.equal(first.headers['content-type'], 'text/event-stream');
    const it = first.body[Symbol.asyncIterator]();
    const chunk = await it.next();
    const latency = Date.now() - writtenAt;
    assert.equal(Buffer.from(chunk.value as Buffer).toString(), 'data: first\n\n');
    assert.ok(latency < 250, `the first event reached the client ${latency} ms after the handler wrote it`);
    release();
    let rest = '';
    for (let c = await it.next(); !c.done; c = await it.next()) rest += Buffer.from(c.value as Buffer).toString();
    assert.equal(rest, 'data: last\n\n');

    const many = await (await request(`${s.base}/sse/many`)).body.text();
    const ids = [...many.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    assert.deepEqual(
      ids,
      Array.from({ length: 1000 }, (_, i) => i),
      '1,000 events, each once, in order',
    );

    const inbox = await countGatewayInbox(t, s);
    const forever = await request(`${s.base}/sse/forever`);
    const reader = forever.body[Symbol.asyncIterator]();
    for (let k = 0; k < 3; k++) await reader.next();
    const metrics = await (await request(`http://127.0.0.1:${s.gw.adminPort}/metrics`)).body.text();
    assert.match(metrics, /^natsgw_nats_streams_open 1$/m, 'the open stream is counted');
    const abortedAt = Date.now();
    forever.body.destroy();
    await eventually(() => stoppedAt > 0, 2000, 'the handler sees close after the client went away');
    assert.ok(stoppedAt - abortedAt < 1000, `close reached the handler ${stoppedAt - abortedAt} ms after the abort`);
    assert.equal(writesAfterClose, 0);
    await new Promise((r) => setTimeout(r, 100));
    const settled = inbox.n;
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(inbox.n, settled, 'nothing more is published for that request');
    await eventually(() => s.gw.inFlight === 0, 1000, 'nothing in flight at the gateway');
  });
});

test('streaming: 200 MiB download and 200 MiB upload through a service in its own process — sha256 identical, memory flat on both sides', async (t) => {
  await withStack(t, {}, async (s) => {
    const svc = await spawnService(t, s.ns.url, 'api.files');
    const pids = [process.pid, svc.pid!];
    const expected = patternSha(200);

    // The clients run in processes of their own: what is measured here is the gateway's memory alone.
    const overrun = () => s.gw.view.uploadOverrunBytes();
    const down = sampleMemory(pids, overrun);
    const got = JSON.parse(await runBulkClient('down', `${s.base}/files/dl?mib=200`, 200)) as { status: number; contentLength: string; bytes: number; sha256: string };
    const downSeries = down.stop();
    assert.equal(got.contentLength, String(200 * MiB), 'the service’s Content-Length reaches the client');
    assert.equal(got.bytes, 200 * MiB);
    assert.equal(got.sha256, expected, 'download bytes identical');

    const up = sampleMemory(pids, overrun);
    const sent = JSON.parse(await runBulkClient('up', `${s.base}/files/up`, 200)) as { status: number; answer: { bytes: number; sha256: string }; error?: string };
    const upSeries = up.stop();
    // Says what the client saw (an error such as EPIPE, or a refusal's status) and what the gateway held, should this ever fail.
    assert.equal(sent.status, 200, `upload: the client saw ${JSON.stringify(sent)}; overrun now ${overrun()} bytes; gateway log: ${logTail(s.logs)}`);
    assert.deepEqual(sent.answer, { bytes: 200 * MiB, sha256: expected }, 'upload bytes identical');

    // Bounds: a window (1 MiB) per direction plus what V8 keeps between
    // collections, besides what uWS reads past a pause (counted as overrun,
    // nats/upload-overrun.ts). That has no bound of its own but
    // --max-upload-buffer: uWS reads on while each read fills its buffer, so
    // a client that keeps up with the gateway's reads (a busy core here) can
    // bring in most of the body at once (20–36 MiB usually, 147 MiB seen;
    // bare uWS does the same, README Known limits). What is checked is that
    // the gateway holds nothing it does not count, and gives it all back.
    for (const [what, series] of [
      ['download', downSeries],
      ['upload', upSeries],
    ] as const) {
      for (const [who, { base, samples, overrun: held }] of [
        ['gateway (retained after GC)', series[0]!],
        ['service', series[1]!],
      ] as const) {
        const rest = samples.map((v, i) => v - held[i]!);
        const growth = Math.max(...rest) - base;
        const heldPeak = Math.max(...held);
        t.diagnostic(
          `${what}: ${who} ${Math.round(base / MiB)} MiB → peak ${Math.round(Math.max(...samples) / MiB)} MiB${heldPeak > 0 ? `, of which overrun at most ${Math.round(heldPeak / MiB)} MiB` : ''}`,
        );
        assert.ok(growth < 80 * MiB, `${what}: ${who} grew ${Math.round(growth / MiB)} MiB besides the overrun`);
        // No upward trend besides the overrun (whose size is up to each read
        // past a pause): the last third peaks no higher than the first two
        // thirds (+16 MiB).
        const cut = Math.floor((rest.length * 2) / 3);
        if (cut > 3) assert.ok(Math.max(...rest.slice(cut)) <= Math.max(...rest.slice(0, cut)) + 16 * MiB, `${what}: ${who} memory keeps growing`);
      }
    }
    assert.equal(s.gw.inFlight, 0);
    assert.equal(overrun(), 0, 'what the upload held past its pauses is given back');
  });
});

test('streaming: a slow client slows the handler (write() false, drain later); a slow handler slows the upload', async (t) => {
  await withStack(t, {}, async (s) => {
    let written = 0;
    let drains = 0;
    let falseWrites = 0;
    let handlerRead = 0;
    let uploadClosed = false;
    let clientGone = false;
    const app = express();
    app.get('/flow/fast', (req, res) => {
      const chunk = Buffer.alloc(64 * 1024, 1);
      const pump = (): void => {
        while (written < 256 * MiB) {
          written += chunk.length;
          if (!res.write(chunk)) {
            falseWrites++;
            return void res.once('drain', () => {
              drains++;
              pump();
            });
          }
        }
        res.end();
      };
      req.on('close', () => (written = Infinity));
      pump();
    });
    app.get('/flow/sized', (_req, res) => {
      // With a Content-Length, so the gateway writes with tryEnd, which keeps what the socket does not take.
      res.setHeader('content-length', String(16 * MiB));
      let i = 0;
      const pump = (): void => {
        while (i < 256) if (!res.write(patternChunk(i++))) return void res.once('drain', pump);
        res.end();
      };
      pump();
    });
    app.post('/flow/slow', (req, res) => {
      // Reads about 1 MiB/s: take a chunk, pause for as long as it "costs".
      req.on('data', (c: Buffer) => {
        handlerRead += c.length;
        if (clientGone) return;
        req.pause();
        setTimeout(() => req.resume(), Math.ceil(c.length / 1024));
      });
      req.on('close', () => (uploadClosed = true));
      req.on('end', () => res.end('done'));
      req.on('error', () => undefined);
    });
    await s.serve(app, { nats: s.ns.url, subject: 'api.flow' });

    // Slow client: reads 1 MiB/s for 3 s.
    const r = await request(`${s.base}/flow/fast`, { highWaterMark: 64 * 1024 });
    let read = 0;
    const t0 = Date.now();
    for await (const c of r.body) {
      read += (c as Buffer).length;
      if (Date.now() - t0 > 3000) break;
      await new Promise((resolve) => setTimeout(resolve, Math.ceil((c as Buffer).length / 1024)));
    }
    const ahead = written - read;
    t.diagnostic(`slow client: read ${(read / MiB).toFixed(1)} MiB, handler wrote ${(written / MiB).toFixed(1)} MiB, write() false ${falseWrites}×, drain ${drains}×`);
    assert.ok(falseWrites > 0 && drains > 0, 'the handler saw write() return false, then drain');
    assert.ok(ahead < 24 * MiB, `the handler ran ${(ahead / MiB).toFixed(1)} MiB ahead of the client (windows and socket buffers only)`);
    r.body.destroy();

    // The same with a Content-Length: every byte arrives, in order, however the client reads.
    const sized = await request(`${s.base}/flow/sized`, { highWaterMark: 16 * 1024 });
    const hash = createHash('sha256');
    let sizedRead = 0;
    const t1 = Date.now();
    for await (const c of sized.body) {
      hash.update(c as Buffer);
      sizedRead += (c as Buffer).length;
      if (Date.now() - t1 < 1500) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(sizedRead, 16 * MiB);
    assert.equal(hash.digest('hex'), patternSha(16), 'a slowly read download with a Content-Length is intact');

    // Slow handler: the client offers 256 MiB as fast as it can. What the
    // gateway forwards is counted on the wire (data frames to the service).
    const spy = await connect({ servers: s.ns.url });
    t.after(() => spy.close());
    let forwarded = 0;
    spy.subscribe('_INBOX.>', {
      callback: (_e, m) => {
        const f = decodeFrame(m.data);
        if (typeof f !== 'string' && f.t === 'data') forwarded += f.body.length;
      },
    });
    await spy.flush();
    const counter = { sent: 0 };
    const ac = new AbortController();
    const upload = request(`${s.base}/flow/slow`, { method: 'POST', body: patternBody(256, counter), headers: { 'content-length': String(256 * MiB) }, signal: ac.signal }).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const behind = counter.sent - handlerRead;
    t.diagnostic(`slow handler: client produced ${(counter.sent / MiB).toFixed(1)} MiB, handler read ${(handlerRead / MiB).toFixed(1)} MiB`);
    assert.ok(handlerRead > 0);
    // The gateway forwards no more than a window beyond what the handler read
    // (plus what req buffers); the rest waits in the client's and the
    // kernel's buffers (tcp_rmem may grow to 32 MiB here), not in the gateway.
    t.diagnostic(`slow handler: the gateway forwarded ${(forwarded / MiB).toFixed(1)} MiB`);
    assert.ok(forwarded - handlerRead <= 2.5 * MiB, `the gateway ran ${((forwarded - handlerRead) / MiB).toFixed(1)} MiB ahead of the handler`);
    assert.ok(behind < 64 * MiB, `the upload was slowed: the client got only ${(behind / MiB).toFixed(1)} MiB ahead of the handler`);
    ac.abort();
    await upload;
    // TCP delivers the client's close after the bytes it had already sent
    // (a few MiB in socket buffers on loopback), so a paused upload notices
    // it once those are read, as node:http would: let the handler read fast.
    clientGone = true;
    await eventually(() => uploadClosed, 5000, 'the handler sees close once the bytes already sent are read');
    await eventually(() => s.gw.inFlight === 0, 2000, 'nothing in flight at the gateway');
  });
});

test('streaming: an upload that waits longer than uWS’s 10 s idle timer for the service to read (paused, after bytes were read past the pause) still completes', async (t) => {
  // uWS re-arms its 10 s idle timer for every 160 KiB it reads, also the
  // bytes it reads past a pause; the gateway disarms it again (pause()), so a
  // paused upload is cut off only by --stream-idle-timeout. Before, this
  // upload was closed as idle 10 s into the stall (client: ECONNRESET).
  await withStack(t, { timeout: 30_000 }, async (s) => {
    let stalledFor = 0;
    const app = express();
    app.post('/stall/up', (req, res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      req.pause();
      const t0 = Date.now();
      setTimeout(() => {
        stalledFor = Date.now() - t0;
        req.on('data', (c: Buffer) => {
          hash.update(c);
          bytes += c.length;
        });
        req.on('end', () => res.json({ bytes, sha256: hash.digest('hex') }));
        req.resume();
      }, 11_500);
    });
    await s.serve(app, { nats: s.ns.url, subject: 'api.stall' });
    const sent = JSON.parse(await runBulkClient('up', `${s.base}/stall/up`, 64)) as { status?: number; answer?: unknown; error?: string };
    assert.deepEqual(sent, { status: 200, answer: { bytes: 64 * MiB, sha256: patternSha(64) } }, 'the upload completes, intact');
    assert.ok(stalledFor >= 11_000, `the handler waited ${stalledFor} ms before reading`);
    assert.equal(s.gw.view.uploadOverrunBytes(), 0, 'what was held past the pause is given back');
  });
});

test('streaming: what an upload sends past its pause is bounded by --max-upload-buffer — past it 503, the service is told, the budget comes back', async (t) => {
  // uWS reads on past a pause while its reads fill its 512 KiB buffer
  // (nats/upload-overrun.ts), which they do once TCP has grown the receive
  // buffer for a fast reader: a client and a service in processes of their
  // own, both as fast as they can, get more than a window into the gateway
  // (tens of MiB here: the 200 MiB test's upload). With no room beyond the
  // window, that cuts the upload off.
  await withStack(t, { maxUploadBuffer: 0, accessLog: true }, async (s) => {
    await spawnService(t, s.ns.url, 'api.files');
    // The frames to the service's inbox, seen on the wire: the cancel must be among them.
    const spy = await connect({ servers: s.ns.url });
    t.after(() => spy.close());
    const cancels: string[] = [];
    spy.subscribe('_INBOX.>', {
      callback: (_e, m) => {
        const f = decodeFrame(m.data);
        if (typeof f !== 'string' && f.t === 'cancel') cancels.push(f.reason);
      },
    });
    await spy.flush();
    // A busy gateway: its loop is held 20 ms in every 50 (as by its work, or GC), while the client's bytes pile up in the kernel.
    const busy = setInterval(() => {
      const until = performance.now() + 20;
      while (performance.now() < until);
    }, 50);
    const outcome = JSON.parse(await runBulkClient('up', `${s.base}/files/up`, 200).finally(() => clearInterval(busy))) as { status?: number; error?: string };
    t.diagnostic(`client: ${JSON.stringify(outcome).slice(0, 200)}`);
    await eventually(() => s.logs.some((l) => l.path === '/files/up' && l.status !== undefined), 5000, 'the request is logged');
    const line = s.logs.find((l) => l.path === '/files/up' && l.status !== undefined)!;
    // A 200 here would mean uWS no longer reads past a pause: then upload-overrun.ts and this test can go.
    assert.equal(line.status, 503, 'the upload was cut off for what it held past its pause');
    assert.match(String(line.cutOff), /uploads read past their pause hold over 0 bytes \(--max-upload-buffer\)/);
    // The client sees the 503, or only the closed connection if its write failed before it read.
    if (outcome.error === undefined) assert.equal(outcome.status, 503);
    // The cut often comes before the service has named its inbox (the first
    // read past the pause already overruns a limit of 0); then its first
    // credit frame is answered with a cancel for a request that is over.
    await eventually(() => cancels.length > 0, 2000, 'the service is sent a cancel');
    assert.ok(
      cancels.every((reason) => reason.includes('--max-upload-buffer') || reason.startsWith('no such request')),
      `the cancel says why: ${cancels.join('; ')}`,
    );
    await eventually(() => s.gw.inFlight === 0, 2000, 'nothing in flight at the gateway');
    const metrics = await (await request(`http://127.0.0.1:${s.gw.adminPort}/metrics`)).body.text();
    assert.match(metrics, /^natsgw_nats_upload_overrun_bytes 0$/m, 'what the stream held beyond its window is given back');
  });
});

test('streaming: a 20 MiB multipart upload through multer', async (t) => {
  await withStack(t, {}, async (s) => {
    const app = express();
    const upload = multer({ storage: multer.memoryStorage(), limits: { fileSize: 64 * MiB } });
    app.post('/mp/upload', upload.single('file'), (req, res) => {
      const file = req.file!;
      res.json({ name: file.originalname, size: file.size, sha256: createHash('sha256').update(file.buffer).digest('hex'), note: req.body.note });
    });
    await s.serve(app, { nats: s.ns.url, subject: 'api.mp' });
    const data = Buffer.alloc(20 * MiB);
    for (let i = 0; i < data.length; i += 4096) data[i] = i & 0xff;
    const form = new FormData();
    form.append('note', 'hello');
    form.append('file', new Blob([data]), 'big.bin');
    const r = await request(`${s.base}/mp/upload`, { method: 'POST', body: form });
    assert.equal(r.statusCode, 200);
    assert.deepEqual(await r.body.json(), { name: 'big.bin', size: data.length, sha256: createHash('sha256').update(data).digest('hex'), note: 'hello' });
  });
});

test('streaming: kill -9 of the service mid-download and mid-upload — the client is cut off within seconds, nothing is left in flight', async (t) => {
  await withStack(t, {}, async (s) => {
    // Mid-download: the head is out, so the client sees a body cut short.
    const dl = await spawnService(t, s.ns.url, 'api.kill');
    const r = await request(`${s.base}/kill/dl?mib=1024`);
    assert.equal(r.statusCode, 200);
    let got = 0;
    let killedAt = 0;
    await assert.rejects(
      (async () => {
        for await (const c of r.body) {
          got += (c as Buffer).length;
          if (killedAt === 0 && got > 8 * MiB) {
            killedAt = Date.now();
            dl.kill('SIGKILL');
          }
        }
      })(),
      'the download ends in an error, not a clean end',
    );
    const cutOff = Date.now() - killedAt;
    t.diagnostic(`download cut off ${cutOff} ms after kill -9`);
    assert.ok(killedAt !== 0, `the service was killed mid-download (the client got ${got} bytes first)`);
    assert.ok(got < 1024 * MiB);
    assert.ok(cutOff < 5000, `cut off within 5 s (${cutOff} ms)`);
    await eventually(() => s.gw.inFlight === 0, 3000, 'nothing in flight after the download');

    // Mid-upload, once the stream is under way (the service has taken 4 MiB,
    // as it reports): the response head has not been sent, so the client
    // gets a 502 problem (or a closed connection). (A service killed before
    // its first answer is only a request never answered: 504 after
    // --timeout, as in v1. Nothing here may subscribe to the service's inbox
    // space: that interest would hide the no-responders the gateway relies on.)
    const up = await spawnService(t, s.ns.url, 'api.kill2');
    let upKilledAt = 0;
    let received = 0;
    let pendingLine = '';
    up.stdout!.on('data', (d: Buffer) => {
      // Whole lines only: a read may end inside one.
      const lines = (pendingLine + d.toString()).split('\n');
      pendingLine = lines.pop()!;
      for (const line of lines) if (line.startsWith('received ')) received = Math.max(received, Number(line.slice(9)));
      if (upKilledAt === 0 && received > 4 * MiB) {
        upKilledAt = Date.now();
        up.kill('SIGKILL');
      }
    });
    const sent = { sent: 0 };
    const body = patternBody(1024, sent, 16 * MiB);
    const outcome = await request(`${s.base}/kill2/up`, { method: 'POST', body, headers: { 'content-length': String(1024 * MiB) } }).then(
      async (res) => `${res.statusCode} ${((await res.body.json()) as { code: string }).code}`,
      (err: Error) => `error ${err.message}`,
    );
    const upCutOff = Date.now() - upKilledAt;
    const where = `the client produced ${sent.sent} bytes, the service reported ${received} received, killed: ${upKilledAt !== 0}; gateway: ${s.gw.inFlight} in flight, ${s.gw.openStreams} streams; log: ${logTail(s.logs)}`;
    t.diagnostic(`upload: ${outcome}, ${upCutOff} ms after kill -9`);
    assert.ok(upKilledAt !== 0, `the service was killed mid-upload (${where})`);
    assert.ok(outcome === '502 stream-broken' || outcome.startsWith('error'), `${outcome} (${where})`);
    assert.ok(upCutOff < 5000, `cut off within 5 s (${upCutOff} ms; ${where})`);
    await eventually(() => s.gw.inFlight === 0 && s.gw.openStreams === 0, 3000, 'nothing in flight after the upload');
  });
});

test('streaming: client abort mid-download and mid-upload — the handler sees close, no more chunks are published', async (t) => {
  await withStack(t, {}, async (s) => {
    const closed: string[] = [];
    const app = express();
    app.get('/ab/down', (_req, res) => {
      const chunk = Buffer.alloc(64 * 1024, 2);
      let stop = false;
      const pump = (): void => {
        while (!stop) if (!res.write(chunk)) return void res.once('drain', pump);
      };
      res.on('close', () => {
        stop = true;
        closed.push('down');
      });
      pump();
    });
    app.post('/ab/up', (req, res) => {
      req.on('data', () => undefined);
      req.on('aborted', () => closed.push('up:aborted'));
      req.on('close', () => closed.push('up:close'));
      req.on('error', () => undefined);
      req.on('end', () => res.end('unexpected'));
    });
    await s.serve(app, { nats: s.ns.url, subject: 'api.ab' });
    const inbox = await countGatewayInbox(t, s);

    const r = await request(`${s.base}/ab/down`);
    let got = 0;
    for await (const c of r.body) {
      got += (c as Buffer).length;
      if (got > 4 * MiB) break;
    }
    r.body.destroy();
    await eventually(() => closed.includes('down'), 2000, 'the download handler sees close');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const afterDown = inbox.n;
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(inbox.n, afterDown, 'no more chunks published after the download was aborted');

    const ac = new AbortController();
    const counter = { sent: 0 };
    const done = request(`${s.base}/ab/up`, { method: 'POST', body: patternBody(512, counter, 4 * MiB), headers: { 'content-length': String(512 * MiB) }, signal: ac.signal }).catch(() => undefined);
    await eventually(() => counter.sent > 4 * MiB, 5000, 'upload under way');
    ac.abort();
    await done;
    await eventually(() => closed.includes('up:close'), 2000, 'the upload handler sees close');
    assert.ok(closed.includes('up:aborted'), 'and aborted, as node:http emits it');
    await eventually(() => s.gw.inFlight === 0 && s.gw.openStreams === 0, 2000, 'nothing in flight');
  });
});

test('streaming: overlapping mounts and queue groups — streamed requests still run exactly once, on the most specific mount', async (t) => {
  await withStack(t, {}, async (s) => {
    const runs = new Map<string, string[]>();
    const handler = (who: string) => (req: IncomingMessage, res: ServerResponse) => {
      const id = String(req.headers['x-request-id']);
      runs.set(id, [...(runs.get(id) ?? []), who]);
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => {
        res.write(`${who} got ${n} bytes;`);
        setTimeout(() => res.end(' done'), 5); // a streamed response
      });
    };
    for (let i = 0; i < 2; i++) {
      await s.serve(handler(`outer${i}`), { nats: s.ns.url, subject: 'api.ov' });
      await s.serve(handler(`deep${i}`), { nats: s.ns.url, subject: 'api.ov.deep' });
    }
    const body = Buffer.alloc(3 * MiB, 5);
    const answers = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const r = await request(`${s.base}/ov/deep/x${i}`, { method: 'POST', body, headers: { 'x-request-id': `ov-${i}` } });
        return { status: r.statusCode, text: await r.body.text(), id: `ov-${i}` };
      }),
    );
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.match(a.text, /^deep[01] got 3145728 bytes; done$/);
      assert.equal(runs.get(a.id)?.length, 1, `${a.id} ran once: ${runs.get(a.id)?.join(',')}`);
      assert.match(runs.get(a.id)![0]!, /^deep/);
    }
  });
});

test('streaming: an override and a NATS route flip live while streams are open; open streams finish on the way they started', async (t) => {
  await withStack(t, {}, async (s) => {
    const backend = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let i = 0;
      const timer = setInterval(() => {
        res.write(`data: http ${i++}\n\n`);
        if (i === 5) {
          clearInterval(timer);
          res.end();
        }
      }, 20);
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    t.after(() => backend.close());
    const port = (backend.address() as { port: number }).port;
    await s.serve(
      (_req, res) => {
        res.setHeader('content-type', 'text/event-stream');
        let i = 0;
        const timer = setInterval(() => {
          res.write(`data: nats ${i++}\n\n`);
          if (i === 10) {
            clearInterval(timer);
            res.end();
          }
        }, 50);
      },
      { nats: s.ns.url, subject: 'api.flip' },
    );
    const before = await request(`${s.base}/flip/events`);
    const beforeText = before.body.text();
    const kv = await routesBucket(s.nc);
    await putRoute(kv, s.gw, 'api.flip', { upstreams: [{ url: `http://127.0.0.1:${port}` }] });
    const during = await (await request(`${s.base}/flip/events`)).body.text();
    assert.match(during, /^data: http 0/, 'a new stream goes to the override');
    assert.equal(await beforeText, Array.from({ length: 10 }, (_, i) => `data: nats ${i}\n\n`).join(''), 'the stream opened before the flip finished over NATS, whole');
    const proxied = await request(`${s.base}/flip/events`);
    const proxiedText = proxied.body.text();
    await deleteRoute(kv, s.gw, 'api.flip');
    assert.equal(await proxiedText, Array.from({ length: 5 }, (_, i) => `data: http ${i}\n\n`).join(''), 'the proxied stream finished after the route was removed');
    assert.match(await (await request(`${s.base}/flip/events`)).body.text(), /^data: nats 0/, 'and new streams are on NATS again');
  });
});

test('streaming: unmodified frameworks — Express res.sendFile (and a Range of it), express.raw with a large limit, a Fastify stream, a Koa stream body', async (t) => {
  await withStack(t, {}, async (s) => {
    const dir = mkdtempSync(join(tmpdir(), 'natsgw-sendfile-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = Buffer.alloc(20 * MiB);
    for (let i = 0; i < file.length; i += 512) file[i] = (i / 512) & 0xff;
    writeFileSync(join(dir, 'big.bin'), file);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

    const app = express();
    app.get('/fw/file', (_req, res) => res.sendFile(join(dir, 'big.bin')));
    app.post('/fw/raw', express.raw({ type: '*/*', limit: '64mb' }), (req, res) => res.json({ bytes: (req.body as Buffer).length, sha256: sha(req.body as Buffer) }));
    await s.serve(app, { nats: s.ns.url, subject: 'api.fw' });
    const fastify = Fastify();
    fastify.get('/fy/stream', async (_req, reply) =>
      reply.type('application/octet-stream').send(
        Readable.from(
          (function* () {
            for (let i = 0; i < 80; i++) yield Buffer.alloc(64 * 1024, i);
          })(),
        ),
      ),
    );
    await fastify.ready();
    await s.serve((req, res) => fastify.routing(req, res), { nats: s.ns.url, subject: 'api.fy' });
    const koa = new Koa();
    koa.use(async (ctx) => {
      ctx.type = 'application/octet-stream';
      ctx.body = Readable.from(
        (function* () {
          for (let i = 0; i < 80; i++) yield Buffer.alloc(64 * 1024, 255 - i);
        })(),
      );
    });
    await s.serve(koa.callback(), { nats: s.ns.url, subject: 'api.ko' });

    const whole = await request(`${s.base}/fw/file`);
    assert.equal(whole.statusCode, 200);
    assert.equal(whole.headers['content-length'], String(file.length));
    assert.equal(sha(Buffer.from(await whole.body.arrayBuffer())), sha(file), 'sendFile: bytes identical');
    const range = await request(`${s.base}/fw/file`, { headers: { range: 'bytes=1000000-2999999' } });
    assert.equal(range.statusCode, 206);
    assert.equal(sha(Buffer.from(await range.body.arrayBuffer())), sha(file.subarray(1_000_000, 3_000_000)), 'a Range of it');
    const raw = await request(`${s.base}/fw/raw`, { method: 'POST', body: file, headers: { 'content-type': 'application/octet-stream' } });
    assert.deepEqual(await raw.body.json(), { bytes: file.length, sha256: sha(file) }, 'express.raw got the whole streamed body');
    const fy = Buffer.from(await (await request(`${s.base}/fy/stream`)).body.arrayBuffer());
    assert.equal(fy.length, 80 * 64 * 1024);
    assert.ok(fy[0] === 0 && fy[fy.length - 1] === 79, 'Fastify stream intact');
    const ko = Buffer.from(await (await request(`${s.base}/ko/anything`)).body.arrayBuffer());
    assert.equal(ko.length, 80 * 64 * 1024);
    assert.ok(ko[0] === 255 && ko[ko.length - 1] === 176, 'Koa stream intact');
  });
});
