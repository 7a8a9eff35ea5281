/**
 * Starts and stops real nats-server processes for tests, the demo and the
 * benchmarks: a free port on loopback, a temporary JetStream folder, and a
 * ports file to learn the port (the nats.js test launcher's approach).
 *
 * The binary comes from $NATS_SERVER, which `scripts/setup.mjs` sets after
 * finding or obtaining nats-server; plain `nats-server` on PATH otherwise.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface NatsServerOptions {
  /** Enable JetStream (default true). */
  jetstream?: boolean;
  /** Port to listen on; a free one when omitted. */
  port?: number;
  /** Extra configuration text appended to the generated config file. */
  config?: string;
  /**
   * Run in its own process group, so a terminal's Ctrl-C reaches only the
   * parent, which can then stop things in order (the demo does).
   */
  detached?: boolean;
}

export interface NatsServer {
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  /** The server's process id (for CPU and memory figures). */
  readonly pid: number;
  /** Kills the server (SIGKILL when `hard`), keeping its folder for a restart. */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again on the same port with the same JetStream folder (optionally turning JetStream on or off). */
  restart(changes?: { jetstream?: boolean }): Promise<void>;
  /**
   * Replaces the extra configuration text and makes the running server
   * reload it (SIGHUP), as an operator rotating users would. Resolves once
   * the server logged the reload.
   */
  reload(config: string): Promise<void>;
  /** Stops it and removes its folder. */
  dispose(): Promise<void>;
}

const BIN = (): string => process.env.NATS_SERVER || 'nats-server';

async function waitForPortsFile(dir: string, child: ChildProcess, deadlineMs: number): Promise<number> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with code ${child.exitCode}`);
    const file = readdirSync(dir).find((f) => f.endsWith('.ports'));
    if (file) {
      try {
        const ports = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nats: string[] };
        // nats://host:port, or tls://host:port when the server requires TLS
        const port = /:(\d+)$/.exec(ports.nats[0] ?? '')?.[1];
        if (port !== undefined) return Number(port);
      } catch {
        // written but not complete yet
      }
    }
    await sleep(20);
  }
  throw new Error('nats-server did not report its port in time');
}

/**
 * Starts a nats-server on loopback and resolves once it accepts clients.
 * @example
 *   const ns = await startNatsServer();
 *   const nc = await connect({ servers: ns.url });
 *   ...
 *   await ns.dispose();
 */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  let opts = options;
  const dir = mkdtempSync(join(tmpdir(), 'natsgw-nats-'));
  const storeDir = join(dir, 'js');
  let port = opts.port ?? -1;
  let child: ChildProcess | undefined;
  let stderr = '';
  let reloads = 0;

  const confFile = join(dir, 'server.conf');
  const writeConf = (): void => {
    const conf = [`listen: "127.0.0.1:${port}"`, opts.jetstream === false ? '' : `jetstream { store_dir: ${JSON.stringify(storeDir)} }`, opts.config ?? ''].join('\n');
    writeFileSync(confFile, conf);
  };

  const launch = async (changes: { jetstream?: boolean } = {}): Promise<void> => {
    if (changes.jetstream !== undefined) opts = { ...opts, jetstream: changes.jetstream };
    for (const f of readdirSync(dir)) if (f.endsWith('.ports')) rmSync(join(dir, f));
    writeConf();
    stderr = '';
    child = spawn(BIN(), ['-c', confFile, '--ports_file_dir', dir], { stdio: ['ignore', 'ignore', 'pipe'], detached: opts.detached ?? false });
    child.stderr!.on('data', (d: Buffer) => {
      const text = d.toString();
      stderr = (stderr + text).slice(-4000);
      reloads += text.split('Reloaded server configuration').length - 1;
    });
    const spawned = child;
    await new Promise<void>((resolve, reject) => {
      spawned.once('spawn', resolve);
      spawned.once('error', (err) => reject(new Error(`cannot start ${BIN()}: ${err.message} (run: node scripts/nats-server.mjs)`)));
    });
    try {
      port = await waitForPortsFile(dir, spawned, 10_000);
    } catch (err) {
      spawned.kill('SIGKILL');
      throw new Error(`${(err as Error).message}\n${stderr}`);
    }
  };

  const stop = async (hard = false): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((resolve) => c.once('exit', resolve));
    c.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await exited;
  };

  await launch();
  return {
    get url() {
      return `nats://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get pid() {
      return child?.pid ?? 0;
    },
    storeDir,
    stop,
    restart: launch,
    async reload(config: string) {
      opts = { ...opts, config };
      writeConf();
      const before = reloads;
      child?.kill('SIGHUP');
      const until = Date.now() + 10_000;
      while (reloads === before) {
        if (Date.now() > until) throw new Error(`nats-server did not reload:\n${stderr}`);
        await sleep(20);
      }
    },
    async dispose() {
      await stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
