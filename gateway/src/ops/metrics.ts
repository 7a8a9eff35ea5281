/**
 * Prometheus metrics (prom-client, on the gateway's own registry).
 *
 * Nothing is recorded through prom-client on the request path: each metric
 * reads the gateway's own counters (TrafficStats, Upstream, the watcher) when
 * scraped. Labels stay low-cardinality: the route (root subject or override
 * key), target (nats|http), method, status class; backend metrics carry the
 * backend (URL and settings id) and no route, so their series grow with
 * backends, not routes × backends — never the request path.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';
import { BREAKER_STATE_VALUE } from '../http/upstream/breaker.js';
import type { Upstream } from '../http/upstream/upstream.js';
import type { GatewayView } from './gateway-view.js';
import { LATENCY_BUCKETS_S, METHODS, STATUS_CLASSES } from './traffic-stats.js';

type Labels = Record<string, string | number>;
interface Sample {
  labels: Labels;
  value: number;
  metricName?: string;
}

/**
 * How a gateway with --workers merges this metric over its worker threads
 * (prom-client's AggregatorRegistry): counters, histograms and most gauges
 * add up; "is it up" gauges take the worst worker.
 */
type Aggregator = 'sum' | 'min' | 'max';

/** A metric whose samples are computed at scrape time. */
function metric(name: string, help: string, type: 'counter' | 'gauge' | 'histogram', samples: () => Sample[], aggregator: Aggregator = 'sum') {
  return {
    name,
    help,
    type,
    aggregator,
    get: async () => ({ name, help, type, aggregator, values: samples() }),
  };
}

/**
 * One sample set per backend (not per route and backend: a backend shared by
 * 10,000 routes is one series), labelled with its URL and, telling apart
 * two backends with the same URL and different settings, its settings id.
 */
function eachUpstream(view: GatewayView, fn: (labels: Labels, u: Upstream) => Sample[]): Sample[] {
  const out: Sample[] = [];
  for (const u of view.routes.backends.all()) out.push(...fn({ upstream: u.url, settings: u.settingsId }, u));
  return out;
}

/**
 * `processMetrics: false` for a worker thread: process_* and nodejs_* are the
 * process's, reported once by the thread that owns the admin API.
 * @example const registry = createMetrics(view); res.end(await registry.metrics());
 */
export function createMetrics(view: GatewayView, processMetrics = true): Registry {
  const registry = new Registry();
  if (processMetrics) collectDefaultMetrics({ register: registry });
  const add = (m: ReturnType<typeof metric>) => registry.registerMetric(m as never);

  add(
    metric('http_requests_total', 'HTTP requests answered, by route, target, method and status class.', 'counter', () =>
      view.traffic.all().flatMap((t) => {
        const out: Sample[] = [];
        for (const [m, method] of METHODS.entries()) {
          for (const [c, cls] of STATUS_CLASSES.entries()) {
            const value = t.requests[m * STATUS_CLASSES.length + c]!;
            if (value > 0) out.push({ labels: { route: t.route, target: t.target, method, status_class: cls }, value });
          }
        }
        return out;
      }),
    ),
  );
  add(
    metric('http_request_duration_seconds', 'Time from request to complete response, by route and target.', 'histogram', () =>
      view.traffic.all().flatMap((t) => {
        const labels = { route: t.route, target: t.target };
        const out: Sample[] = [];
        let cumulative = 0;
        LATENCY_BUCKETS_S.forEach((le, b) => {
          cumulative += t.latency[b]!;
          out.push({ metricName: 'http_request_duration_seconds_bucket', labels: { ...labels, le }, value: cumulative });
        });
        out.push({ metricName: 'http_request_duration_seconds_bucket', labels: { ...labels, le: '+Inf' }, value: t.count });
        out.push({ metricName: 'http_request_duration_seconds_sum', labels, value: t.latencySumS });
        out.push({ metricName: 'http_request_duration_seconds_count', labels, value: t.count });
        return out;
      }),
    ),
  );
  add(
    metric('natsgw_http_response_bytes_total', 'Response body bytes sent, by route and target.', 'counter', () =>
      view.traffic.all().map((t) => ({ labels: { route: t.route, target: t.target }, value: t.bytes })),
    ),
  );
  add(
    metric('natsgw_http_client_aborts_total', 'Requests abandoned by the client before the response was complete.', 'counter', () =>
      view.traffic.all().map((t) => ({ labels: { route: t.route, target: t.target }, value: t.clientAborts })),
    ),
  );
  add(metric('natsgw_http_requests_in_flight', 'Requests accepted and not yet answered.', 'gauge', () => [{ labels: {}, value: view.inFlight() }]));
  add(
    metric(
      'natsgw_nats_upload_overrun_bytes',
      'Request-body bytes streamed uploads hold beyond their flow-control windows: read after a pause while uWS still reads (at most --max-upload-buffer).',
      'gauge',
      () => [{ labels: {}, value: view.uploadOverrunBytes() }],
    ),
  );
  add(metric('natsgw_nats_streams_open', 'Requests whose body or response is streaming over NATS right now (protocol v2).', 'gauge', () => [{ labels: {}, value: view.openStreams() }]));

  add(metric('natsgw_ws_connections_open', 'WebSocket connections open right now.', 'gauge', () => [{ labels: {}, value: view.websockets().open }]));
  add(
    metric('natsgw_ws_messages_total', 'WebSocket messages, from clients (in) and to clients (out; a topic message counts once per connection).', 'counter', () => {
      const w = view.websockets();
      return [
        { labels: { direction: 'in' }, value: w.messagesIn },
        { labels: { direction: 'out' }, value: w.messagesOut },
      ];
    }),
  );
  add(
    metric('natsgw_ws_bytes_total', 'WebSocket message bytes, from clients (in) and to clients (out).', 'counter', () => {
      const w = view.websockets();
      return [
        { labels: { direction: 'in' }, value: w.bytesIn },
        { labels: { direction: 'out' }, value: w.bytesOut },
      ];
    }),
  );
  add(
    metric('natsgw_ws_closes_total', 'WebSocket connections closed, by close code (1005: no code given, 1006: dropped without a close frame).', 'counter', () =>
      Object.entries(view.websockets().closes).map(([code, value]) => ({ labels: { code }, value })),
    ),
  );
  add(metric('natsgw_ws_upgrades_rejected_total', 'WebSocket upgrades refused by the gateway or rejected by the service.', 'counter', () => [{ labels: {}, value: view.websockets().rejected }]));

  add(
    metric('natsgw_upstream_requests_total', 'Tries sent to override backends, by outcome (success, failure, abandoned by the client).', 'counter', () =>
      eachUpstream(view, (backend, u) => [
        { labels: { ...backend, outcome: 'success' }, value: u.successes },
        { labels: { ...backend, outcome: 'failure' }, value: u.failures },
        { labels: { ...backend, outcome: 'abandoned' }, value: u.abandoned },
      ]),
    ),
  );
  /** The backend metrics with one value per backend (undefined: none for this one), in this order. */
  const perBackend: Array<[name: string, help: string, type: 'counter' | 'gauge', value: (u: Upstream, now: number) => number | undefined, aggregator?: Aggregator]> = [
    ['natsgw_upstream_retries_total', 'Tries repeated on another backend after this one failed.', 'counter', (u) => u.retries],
    ['natsgw_upstream_timeouts_total', 'Tries that timed out.', 'counter', (u) => u.timeouts],
    ['natsgw_upstream_connect_errors_total', 'Tries that could not connect (refused, connect timeout, unreachable).', 'counter', (u) => u.connectErrors],
    ['natsgw_backend_up', '1 when the backend may take requests (healthy, not ejected, breaker admits), else 0.', 'gauge', (u, now) => (u.wouldAccept(now) ? 1 : 0), 'min'],
    ['natsgw_backend_in_flight', 'Requests in flight to the backend.', 'gauge', (u) => u.inFlight],
    ['natsgw_backend_ejections_total', 'Times the backend was ejected after consecutive failures.', 'counter', (u) => u.ejections],
    ['natsgw_circuit_breaker_state', 'Circuit breaker state: 0 closed, 1 open, 2 half-open.', 'gauge', (u, now) => (u.breaker ? BREAKER_STATE_VALUE[u.breaker.stateAt(now)] : undefined), 'max'],
  ];
  for (const [name, help, type, value, aggregator] of perBackend) {
    add(
      metric(
        name,
        help,
        type,
        () => {
          const now = Date.now();
          return eachUpstream(view, (backend, u) => {
            const v = value(u, now);
            return v === undefined ? [] : [{ labels: backend, value: v }];
          });
        },
        aggregator,
      ),
    );
  }
  add(
    metric('natsgw_circuit_breaker_transitions_total', 'Circuit breaker state changes, by the state entered.', 'counter', () =>
      eachUpstream(view, (backend, u) => (u.breaker ? (['closed', 'open', 'half-open'] as const).map((to) => ({ labels: { ...backend, to }, value: u.breakerTransitions[to] })) : [])),
    ),
  );
  add(
    metric('natsgw_config_reloads_total', 'Changes read from the routes bucket, by result (applied, rejected, removed).', 'counter', () =>
      Object.entries(view.reloads).map(([result, value]) => ({ labels: { result }, value })),
    ),
  );
  add(
    metric(
      'natsgw_overrides_available',
      '1 while the routes bucket is being watched (JetStream reachable).',
      'gauge',
      () => [{ labels: {}, value: view.overrides().state === 'watching' ? 1 : 0 }],
      'min',
    ),
  );
  add(
    metric(
      'natsgw_faults_total',
      'Hostile or broken input survived, by kind: a NATS callback that threw, a NATS message with header lines that do not parse, an internal error while handling a request.',
      'counter',
      () => Object.entries(view.faults).map(([kind, value]) => ({ labels: { kind }, value })),
    ),
  );
  add(metric('natsgw_nats_connected', '1 while connected to NATS.', 'gauge', () => [{ labels: {}, value: view.nats().connected ? 1 : 0 }], 'min'));
  add(metric('natsgw_nats_reconnects_total', 'Reconnections to NATS since start.', 'counter', () => [{ labels: {}, value: view.nats().reconnects }]));
  return registry;
}
