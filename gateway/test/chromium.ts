/**
 * Headless Chromium for browser checks (WebSockets, CORS): launched in its
 * own process group with a throwaway profile, driven over DevTools (CDP),
 * killed with its helpers when the test ends.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import WebSocket from 'ws';

export const CHROMIUM = '/usr/bin/chromium';
/** A test's skip option when Chromium is missing. */
export const NO_CHROMIUM = !existsSync(CHROMIUM) && 'Chromium is not installed (apt-get install chromium)';

export interface Browser {
  /** Evaluates an expression in the page (a promise is awaited) and returns its value. */
  evaluate(expression: string): Promise<unknown>;
  /** Loads `url` in the page and waits until it has loaded. */
  navigate(url: string): Promise<void>;
  /** CDP events seen so far whose method starts with a prefix given to launch. */
  events: string[];
}

export async function launchChromium(t: { after(fn: () => unknown): void }, eventPrefix = 'Network.'): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'natsgw-chromium-'));
  const browser = spawn(
    CHROMIUM,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${profile}`,
      '--remote-debugging-port=0',
      'about:blank',
    ],
    // Its own process group: Chromium's helpers (zygote, renderers) go with it.
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  );
  let page: WebSocket | undefined;
  t.after(async () => {
    page?.close();
    if (browser.exitCode === null && browser.signalCode === null) {
      const exited = once(browser, 'exit');
      process.kill(-browser.pid!, 'SIGKILL');
      await exited;
    }
    // A helper may still be finishing a write into the profile for a moment.
    rmSync(profile, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
  });
  // Chromium says where its DevTools endpoint listens; the page is driven over it (CDP).
  const devtools = await new Promise<string>((resolve, reject) => {
    let err = '';
    browser.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    browser.once('exit', (code) => reject(new Error(`chromium exited ${code}: ${err}`)));
  });
  const targets = (await (await request(`http://${new URL(devtools).host}/json/list`)).body.json()) as Array<{ type: string; webSocketDebuggerUrl: string }>;
  const p = new WebSocket(targets.find((x) => x.type === 'page')!.webSocketDebuggerUrl);
  page = p;
  await once(p, 'open');
  const events: string[] = [];
  let nextId = 10;
  const call = (method: string, params: object = {}): Promise<{ result?: { result?: { value: unknown }; exceptionDetails?: unknown } }> =>
    new Promise((resolve) => {
      const id = nextId++;
      p.on('message', function onResult(raw: Buffer) {
        const m = JSON.parse(raw.toString()) as { id?: number };
        if (m.id !== id) return;
        p.off('message', onResult);
        resolve(m as never);
      });
      p.send(JSON.stringify({ id, method, params }));
    });
  p.on('message', (raw: Buffer) => {
    const m = JSON.parse(raw.toString()) as { method?: string };
    if (m.method?.startsWith(eventPrefix) === true) events.push(raw.toString().slice(0, 300));
  });
  await call('Network.enable');
  const evaluate = async (expression: string): Promise<unknown> => {
    const r = await call('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
    if (r.result?.exceptionDetails !== undefined) throw new Error(JSON.stringify(r.result.exceptionDetails));
    return r.result?.result?.value;
  };
  return {
    evaluate,
    events,
    async navigate(url) {
      await call('Page.navigate', { url });
      for (let i = 0; i < 100; i++) {
        if ((await evaluate(`location.href === ${JSON.stringify(url)} && document.readyState === 'complete'`)) === true) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`${url} did not load`);
    },
  };
}
