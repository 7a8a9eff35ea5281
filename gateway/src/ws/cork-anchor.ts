/**
 * Completes WebSocket upgrades outside uWS callbacks without tripping a uWS
 * bug: `res.cork(() => res.upgrade(…))`, the documented way to upgrade
 * after async work, closes the new WebSocket right after `open` now and then.
 *
 * Why (uWebSockets PR #1929, fixed upstream in July 2026, not in the
 * uWebSockets.js v20.51 we can load here): HttpResponse::cork() tells an
 * upgrade happened inside it by the socket's address changing, but the
 * adopt realloc usually keeps the address; cork() then runs its HTTP
 * "Connection: close" logic on the WebSocket, reading bytes that now belong
 * to the WebSocket, and closes it when one bit happens to be set (measured
 * here: 1 connection in 200 with the `ws` client, 1 in 5 for Chromium's
 * first; every time when the client sent `Connection: close`).
 * Upgrading without a cork avoids that code but makes uWS.js print a warning
 * on stderr for every upgrade.
 *
 * So the upgrade runs inside the cork of another socket: a WebSocket this
 * thread opens to a private uWS app of its own on a loopback port, which
 * never carries a message. With that socket corked, `res.cork()` only calls
 * its callback, the writes of the 101 go straight to the socket, and nothing
 * reads the upgraded socket as HTTP. Without the anchor (still connecting,
 * or lost), upgrades fall back to `res.cork()`, and it reconnects.
 */
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import type * as UWS from 'uWebSockets.js';

export class CorkAnchor {
  private anchor: UWS.WebSocket<unknown> | undefined = undefined;
  private client: Socket | undefined = undefined;
  private listenSocket: UWS.us_listen_socket | undefined = undefined;
  private port = 0;
  private closed = false;
  private retry: NodeJS.Timeout | undefined = undefined;
  private app: UWS.TemplatedApp | undefined = undefined;

  constructor(private readonly uws: typeof UWS) {}

  /** Opens the anchor; resolves once it is usable (or after 2 s without it: upgrades then fall back). */
  start(): Promise<void> {
    const app = this.uws.App();
    this.app = app;
    let opened!: () => void;
    const ready = new Promise<void>((resolve) => (opened = resolve));
    app.ws('/*', {
      // Silent forever: no idle timeout, no pings, nothing ever sent.
      idleTimeout: 0,
      sendPingsAutomatically: false,
      maxPayloadLength: 16,
      open: (ws) => {
        this.anchor = ws;
        opened();
      },
      close: () => {
        this.anchor = undefined;
        this.reconnectLater();
      },
    });
    app.listen('127.0.0.1', 0, (socket) => {
      if (!socket) return opened();
      this.listenSocket = socket;
      this.port = this.uws.us_socket_local_port(socket);
      this.connect();
    });
    return Promise.race([ready, new Promise<void>((r) => setTimeout(r, 2000).unref())]);
  }

  private connect(): void {
    if (this.closed) return;
    const key = randomBytes(16).toString('base64');
    const client = connect(this.port, '127.0.0.1', () => {
      client.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    client.on('data', () => undefined); // the 101, then nothing
    client.on('error', () => undefined); // reported through close
    client.on('close', () => this.reconnectLater());
    client.unref();
    this.client = client;
  }

  private reconnectLater(): void {
    if (this.closed || this.retry !== undefined) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      if (this.anchor === undefined) {
        this.client?.destroy();
        this.connect();
      }
    }, 1000);
    this.retry.unref();
  }

  /** Runs `fn` (writes to `res` and `res.upgrade()`) corked, without uWS's upgrade-in-cork bug when the anchor is up. */
  upgrade(res: UWS.HttpResponse, fn: () => void): void {
    const anchor = this.anchor;
    if (anchor === undefined) res.cork(fn);
    else anchor.cork(() => res.cork(fn));
  }

  /** Closes the anchor's app and its sockets (once; a uWS app must not outlive its thread). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retry);
    this.client?.destroy();
    this.anchor = undefined;
    if (this.listenSocket !== undefined) this.uws.us_listen_socket_close(this.listenSocket);
    this.listenSocket = undefined;
    this.app?.close();
  }
}
