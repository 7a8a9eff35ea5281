/**
 * `--preload MODULE`: a module imported in every thread that serves HTTP,
 * before the gateway starts there. It exists for OpenTelemetry: a tracer
 * provider is per thread, and Node's own `--import` runs in the main thread
 * only, never in `--workers` threads (checked on Node 20 and 22).
 */
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/** An absolute path for `--preload`, so a worker thread resolves it as the main thread would. */
export const preloadPath = (path: string): string => (isAbsolute(path) ? path : resolve(path));

/** Imports the module; an error says which module and why. */
export async function runPreload(path: string | undefined): Promise<void> {
  if (path === undefined) return;
  try {
    await import(pathToFileURL(path).href);
  } catch (err) {
    throw new Error(`--preload ${path} failed: ${(err as Error).message}`);
  }
}
