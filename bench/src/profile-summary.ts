/**
 * Reads a V8 CPU profile (`node --cpu-prof`) and says where a process's CPU
 * went during given time windows, per owner: natsgw's code, undici, nats.js,
 * Node's internals, the garbage collector. Native work (a uWebSockets.js
 * call, a socket write) is charged to the JavaScript that called it, and
 * Node's internals to the package that called into them, so "undici" is
 * what a request costs in undici all told. For `BENCH_PROFILE=1 npm run
 * bench:floor`.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** From and to, in µs of the monotonic clock (`process.hrtime` / 1000: the profile's clock on Linux). */
export interface Window {
  from: number;
  to: number;
}

export interface ProfileSummary {
  /** CPU time sampled busy (not idle) in the windows, µs. */
  busyUs: number;
  /** [owner, µs], largest first. */
  owners: Array<[string, number]>;
  /** [function at file:line, self µs], largest first. */
  top: Array<[string, number]>;
}

/** The package a script belongs to; '' for V8's own entries. */
function ownerOf(url: string): string {
  if (url === '') return '';
  if (url.includes('/gateway/dist/') || url.includes('/service-sdk/dist/')) return 'natsgw';
  if (url.includes('/undici/') || url.startsWith('wasm://')) return 'undici';
  if (url.includes('/@nats-io/')) return 'nats.js';
  if (url.includes('/pino') || url.includes('/sonic-boom/')) return 'pino';
  if (url.includes('/bench/dist/')) return 'floor';
  if (url.startsWith('node:')) return 'node';
  return 'other';
}

const SPECIAL: Record<string, string> = { '(garbage collector)': 'GC', '(program)': 'V8 (program)' };

export function summarizeProfile(path: string, windows: Window[], topN = 12): ProfileSummary {
  const p = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (!windows.some((w) => t >= w.from && t <= w.to)) continue;
    // A sample stands for the time until the next one.
    const d = p.timeDeltas[i + 1] ?? 0;
    selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + d);
  }
  const owners = new Map<string, number>();
  const fns = new Map<string, number>();
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') continue;
    busyUs += us;
    let owner = Object.hasOwn(SPECIAL, frame.functionName) ? SPECIAL[frame.functionName]! : '';
    // Natives and Node's internals: charged to the nearest caller that is a package.
    let viaNode = false;
    for (let cur: number | undefined = id; owner === '' && cur !== undefined; cur = parent.get(cur)) {
      const o = ownerOf(byId.get(cur)!.callFrame.url);
      if (o === 'node') viaNode = true;
      else if (o !== '') owner = o;
    }
    if (owner === '') owner = viaNode ? 'node (event loop, streams)' : 'V8 (program)';
    owners.set(owner, (owners.get(owner) ?? 0) + us);
    const where = frame.url === '' ? '' : ` ${frame.url.replace(/^.*\/node_modules\//, '').replace(/^.*\/(gateway|service-sdk|bench)\/dist\//, '$1/')}:${frame.lineNumber + 1}`;
    const key = `${frame.functionName || '(anonymous)'}${where}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
  }
  const desc = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return { busyUs, owners: desc(owners), top: desc(fns).slice(0, topN) };
}
