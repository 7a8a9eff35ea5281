/**
 * The large-body contenders of `npm run bench` (streaming issue): a 100 MiB
 * download and a 100 MiB upload through (a) node:http directly, (b) nginx →
 * node:http (proxy_buffering and proxy_request_buffering off, as for a
 * streaming proxy), (c) natsgw → NATS → SDK service, alternating over the
 * rounds. Reports MB/s, the ratio (c)/(b), and the peak RSS of the gateway
 * and the service during the transfers (sampled every 20 ms).
 */
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { request } from 'undici';

export interface LargeContender {
  key: string;
  label: string;
  /** Base URL the handler is under: `${base}/dl?mib=N`, `${base}/up`. */
  base: string;
}

export interface LargeResult {
  downloadMBps: number;
  uploadMBps: number;
}

const MiB = 1024 * 1024;

function rss(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

async function download(base: string, mib: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await request(`${base}/dl?mib=${mib}`);
  let n = 0;
  for await (const c of r.body) n += (c as Buffer).length;
  if (n !== mib * MiB) throw new Error(`download from ${base}: ${n} bytes, expected ${mib * MiB}`);
  return (mib * MiB) / 1e6 / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function upload(base: string, mib: number): Promise<number> {
  const chunk = Buffer.alloc(MiB, 'y');
  const body = Readable.from(
    (function* () {
      for (let i = 0; i < mib; i++) yield chunk;
    })(),
  );
  const t0 = process.hrtime.bigint();
  const r = await request(`${base}/up`, { method: 'POST', body, headers: { 'content-length': String(mib * MiB) } });
  const text = await r.body.text();
  if (text !== String(mib * MiB)) throw new Error(`upload to ${base}: answered ${r.statusCode} ${text.slice(0, 200)}`);
  return (mib * MiB) / 1e6 / (Number(process.hrtime.bigint() - t0) / 1e9);
}

/** Runs every contender `rounds` times (alternating); the best round of each, and peak RSS of `watch` pids during all transfers. */
export async function runLarge(
  contenders: LargeContender[],
  rounds: number,
  mib: number,
  watch: Record<string, number>,
): Promise<{ best: Record<string, LargeResult>; peakRss: Record<string, number> }> {
  const best: Record<string, LargeResult> = {};
  const peakRss: Record<string, number> = Object.fromEntries(Object.keys(watch).map((k) => [k, 0]));
  const timer = setInterval(() => {
    for (const [k, pid] of Object.entries(watch)) peakRss[k] = Math.max(peakRss[k]!, rss(pid));
  }, 20);
  try {
    for (const c of contenders) await download(c.base, 8); // warm-up
    for (let round = 1; round <= rounds; round++) {
      for (const c of contenders) {
        const d = await download(c.base, mib);
        const u = await upload(c.base, mib);
        const b = (best[c.key] ??= { downloadMBps: 0, uploadMBps: 0 });
        b.downloadMBps = Math.max(b.downloadMBps, d);
        b.uploadMBps = Math.max(b.uploadMBps, u);
        console.log(`  round ${round}  ${c.label.padEnd(26)} ${mib} MiB down ${d.toFixed(0).padStart(5)} MB/s   up ${u.toFixed(0).padStart(5)} MB/s`);
      }
    }
  } finally {
    clearInterval(timer);
  }
  return { best, peakRss };
}
