/**
 * Loads uWebSockets.js and makes sure its native binary is what runs.
 *
 * We depend on `@based/uws@6.0.1` (uWebSockets.js v20.51, native builds for
 * Node 18–23 on glibc Linux, macOS and Windows), pinned exactly because that
 * package's `latest` tag is an older build. It throws when no binary fits
 * this platform and Node ABI; older community builds instead fell back
 * silently to a pure-JS server many times slower, so the native check stays
 * as a guard against a dependency that does that again.
 *
 * Loaded on first use rather than on import, so that a machine without a
 * usable binary gets one clear error from `startGateway()` (and the CLI one
 * line and exit 1) instead of a stack trace while modules load.
 */
import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';

const require = createRequire(import.meta.url);

/** The uWebSockets.js native binary could not be loaded (wrong platform or Node version). */
export class UwsLoadError extends Error {
  override name = 'UwsLoadError';
  readonly code = 'ERR_NATSGW_UWS_LOAD';
}

let loaded: typeof UWS | undefined;

/** Room for the request line (a long URL and query) on top of the header fields. */
const REQUEST_LINE_ROOM_BYTES = 16 * 1024;

/**
 * The largest request head uWS buffers, fixed when its binary loads: it
 * reads `UWS_HTTP_MAX_HEADERS_SIZE` once (default 4096) and answers 431
 * itself beyond it. Set from the first gateway's --max-header-size so that
 * our own limit (with its problem body) is the one clients meet.
 */
export let uwsHeadLimitBytes = 0;

/**
 * uWebSockets.js, loaded once. Throws {@link UwsLoadError} with one line
 * saying what this machine is when the native binary does not load.
 * `maxHeaderBytes` sizes uWS's request-head buffer on the first load.
 * @example const app = loadUws(16384).App();
 */
export function loadUws(maxHeaderBytes: number): typeof UWS {
  if (loaded !== undefined) return loaded;
  // An operator's explicit setting wins.
  process.env.UWS_HTTP_MAX_HEADERS_SIZE ??= String(maxHeaderBytes + REQUEST_LINE_ROOM_BYTES);
  uwsHeadLimitBytes = Number(process.env.UWS_HTTP_MAX_HEADERS_SIZE) || 4096;
  let uws: typeof UWS;
  try {
    uws = require('uWebSockets.js') as typeof UWS;
  } catch (err) {
    // The package's message is a generic first line, then the loader's own error: that is the one to show.
    const lines = String((err as Error).message)
      .split('\n')
      .filter((l) => l.trim() !== '');
    const reason = lines[lines.length - 1] ?? 'unknown reason';
    throw new UwsLoadError(`cannot load the uWebSockets.js native binary for Node ${process.version} (${process.platform} ${process.arch}, ABI ${process.versions.modules}): ${reason}`, {
      cause: err,
    });
  }
  if (!Function.prototype.toString.call(uws.App).includes('[native code]')) {
    throw new UwsLoadError('uWebSockets.js loaded without its native binary (a pure-JS fallback); refusing to serve at a fraction of normal speed');
  }
  // Without it, uWS adds `uWebSockets: 20` to every response: noise that also
  // tells a scanner which parser it is talking to.
  (uws as typeof uws & { _cfg(flag: string): void })._cfg('silent');
  loaded = uws;
  return uws;
}

// The last address formatted: consecutive requests mostly come from the same
// peer (a keep-alive connection, the load balancer in front), so its text is
// reused instead of built again.
const lastBytes = new Uint8Array(16);
let lastLength = 0;
let lastText = '';

/** Formats a uWS binary remote address (4 or 16 bytes) as text; IPv4-mapped IPv6 becomes dotted IPv4. */
export function formatAddress(ab: ArrayBuffer): string {
  const b = new Uint8Array(ab);
  if (b.length === lastLength) {
    let same = true;
    for (let i = b.length - 1; i >= 0 && same; i--) same = b[i] === lastBytes[i];
    if (same) return lastText;
  }
  const text = formatBytes(b);
  if (b.length === 4 || b.length === 16) {
    lastBytes.set(b);
    lastLength = b.length;
    lastText = text;
  }
  return text;
}

function formatBytes(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) return '';
  let mapped = b[10] === 0xff && b[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (b[i] !== 0) mapped = false;
  if (mapped) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  // RFC 5952: compress the longest run of two or more zero groups.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return hex.slice(0, bestStart).join(':') + '::' + hex.slice(bestStart + bestLen).join(':');
}
