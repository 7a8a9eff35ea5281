/**
 * The memory figure of the bench: 1,000 connections at once for 5 s against
 * a gateway with its access log on, its RSS sampled every 50 ms during the
 * burst and read again 3 s after it.
 */
import { spawn } from 'node:child_process';
import { memoryKb } from './tools.js';

export interface BurstResult {
  requestsPerSec: number;
  beforeKb: number;
  peakKb: number;
  afterKb: number;
}

export async function burst(wrk: string | undefined, url: string, pid: number, connections = 1000, seconds = 5): Promise<BurstResult> {
  const beforeKb = memoryKb(pid).rssKb;
  let peakKb = beforeKb;
  const sampler = setInterval(() => (peakKb = Math.max(peakKb, memoryKb(pid).rssKb)), 50);
  let out = '';
  try {
    if (wrk === undefined) return { requestsPerSec: NaN, beforeKb, peakKb, afterKb: beforeKb };
    await new Promise<void>((resolve, reject) => {
      const child = spawn(wrk, ['-t2', `-c${connections}`, `-d${seconds}s`, url], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`wrk exited ${code}`))));
    });
  } finally {
    clearInterval(sampler);
  }
  peakKb = Math.max(peakKb, memoryKb(pid).rssKb);
  await new Promise((r) => setTimeout(r, 3000));
  return { requestsPerSec: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN), beforeKb, peakKb, afterKb: memoryKb(pid).rssKb };
}
