/**
 * The admin HTTP listener (default 127.0.0.1:8081), separate from the
 * traffic port. node:http is plenty for it; nothing here is on the request
 * path.
 *
 *   GET /status /routes /backends /circuits /stats   JSON
 *   GET /services                                     every NATS micro service on the account (asked over NATS, ≈ 1 s)
 *   GET /metrics                                      Prometheus text
 *   GET /healthz                                      200 while the gateway can serve or recover by itself; 503 once its NATS connection closed for good
 *   GET /readyz                                       200 when listening, connected to NATS and not shutting down; 503 otherwise
 */
import { createServer, type Server } from 'node:http';
import { problemJson, PROBLEM_CONTENT_TYPE } from '@natsgw/service-sdk/protocol';
import { isAdminVerb } from './admin-data.js';
import type { AdminSource } from './admin-source.js';
import type { AdminToken } from './admin-token.js';

export interface AdminServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startAdminServer(host: string, port: number, token: AdminToken, source: AdminSource): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const send = (status: number, contentType: string, body: string) => {
      res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
      res.end(body);
    };
    const problem = (status: number, code: string, detail: string) => send(status, PROBLEM_CONTENT_TYPE, problemJson({ status, code, detail }));
    if (!token.allows(req.headers.authorization)) {
      res.setHeader('www-authenticate', 'Bearer realm="natsgw admin"');
      return problem(401, 'unauthorized', 'this admin endpoint needs Authorization: Bearer <admin token>');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return problem(405, 'method-not-allowed', 'the admin API is read-only: use GET');
    const path = (req.url ?? '/').split('?')[0]!;
    const verb = path.slice(1);
    const failed = (err: Error) => problem(500, 'admin-failed', err.message);
    if (verb === 'healthz') {
      source
        .failure()
        .then(
          (failure) =>
            failure === undefined
              ? send(200, 'application/json', JSON.stringify({ ok: true }))
              : send(503, 'application/json', JSON.stringify({ ok: false, reason: `NATS connection closed for good: ${failure}` })),
          failed,
        );
      return;
    }
    if (verb === 'readyz') {
      source.readiness().then((r) => send(r.ready ? 200 : 503, 'application/json', JSON.stringify(r)), failed);
      return;
    }
    if (verb === 'metrics') {
      source.metrics().then((m) => send(200, m.contentType, m.text), failed);
      return;
    }
    if (verb === 'services') {
      source.services().then((r) => (r === null ? problem(503, 'nats-unavailable', 'not connected to NATS: services cannot be asked') : send(200, 'application/json', JSON.stringify(r))), failed);
      return;
    }
    if (isAdminVerb(verb)) {
      source.answer(verb).then((data) => send(200, 'application/json', JSON.stringify(data)), failed);
      return;
    }
    return problem(404, 'not-found', `no admin endpoint ${path}; try /status, /routes, /backends, /circuits, /stats, /services, /metrics, /healthz, /readyz`);
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${host}:${port} for the admin API: ${(err as NodeJS.ErrnoException).code ?? err.message}`)));
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
