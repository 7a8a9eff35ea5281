/**
 * Loads uWebSockets.js and tells whether the native binary is in use.
 *
 * The package we depend on (an alias of @trufflesuite/uws-js-unofficial)
 * quietly falls back to a slow pure-JS server when the native binary does not
 * load for this platform/Node ABI. That must never pass unnoticed, so the
 * gateway checks which one it got and warns loudly at start-up.
 */
import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';

const require = createRequire(import.meta.url);

// The fallback prints its own notice with console.warn/log while loading;
// capture it so our one warning says everything.
const originalWarn = console.warn;
const originalLog = console.log;
const loadNotes: string[] = [];
console.warn = (...args: unknown[]) => void loadNotes.push(args.map(String).join(' '));
console.log = console.warn;
let loaded: typeof UWS;
try {
  loaded = require('uWebSockets.js') as typeof UWS;
} finally {
  console.warn = originalWarn;
  console.log = originalLog;
}

export const uWS = loaded;

/** True when the native uWebSockets.js binary is loaded (not the pure-JS fallback). */
export const uwsIsNative: boolean = Function.prototype.toString.call(uWS.App).includes('[native code]');

/** Why the fallback was used, as the loader reported it (empty when native). */
export const uwsFallbackReason: string = uwsIsNative ? '' : loadNotes.join(' ').replace(/\s+/g, ' ').trim();

/** Formats a uWS binary remote address (4 or 16 bytes) as text; IPv4-mapped IPv6 becomes dotted IPv4. */
export function formatAddress(ab: ArrayBuffer): string {
  const b = new Uint8Array(ab);
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
