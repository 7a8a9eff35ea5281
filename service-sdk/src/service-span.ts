/**
 * The service's span for one request (README "Trace context"): a server
 * span, child of the traceparent the gateway sent, active while the handler
 * runs so the application's own spans hang below it. Made only when the
 * application registered a tracer provider (tracing.ts).
 */
import { context, SpanKind, trace, type Context, type Span, type Tracer } from '@opentelemetry/api';
import type { RequestEnvelope } from './protocol/envelope.js';
import { parseTraceparent, TRACEPARENT, TRACESTATE, normalizeTracestate } from './protocol/trace-context.js';
import { endServerSpan, remoteParent, spanMethod } from './tracing.js';

/** Starts the span of a request on `mount`; returns it and the context to run the handler in. */
export function startServiceSpan(tracer: Tracer, env: RequestEnvelope, mount: string): { span: Span; active: Context } {
  let traceparent: string | undefined;
  let tracestate: string | undefined;
  const h = env.headers;
  for (let i = 0; i < h.length; i += 2) {
    if (h[i] === TRACEPARENT) traceparent = h[i + 1];
    else if (h[i] === TRACESTATE) tracestate = h[i + 1];
  }
  const parent = traceparent === undefined ? undefined : parseTraceparent(traceparent);
  const parentContext = parent === undefined ? context.active() : remoteParent(parent, tracestate === undefined ? undefined : normalizeTracestate(tracestate));
  const method = spanMethod(env.method);
  const span = tracer.startSpan(
    `${method} ${mount}`,
    {
      kind: SpanKind.SERVER,
      attributes: {
        'http.request.method': method,
        'url.path': env.path,
        'url.scheme': env.scheme,
        'server.address': env.host,
        'client.address': env.remote,
        'messaging.system': 'nats',
        'messaging.operation.type': 'process',
        'messaging.destination.name': env.subject,
        'natsgw.mount': mount,
        'natsgw.request_id': env.id,
      },
    },
    parentContext,
  );
  return { span, active: trace.setSpan(parentContext, span) };
}

/** Ends it with the response's status; `failure` (a thrown handler, a cut-off stream) makes it an error. */
export function endServiceSpan(span: Span, status: number, failure: string | undefined): void {
  if (failure !== undefined && status < 500) span.setAttribute('natsgw.failure', failure.slice(0, 200));
  // (A 5xx is an error by its status already.)
  endServerSpan(span, status, failure !== undefined && status < 500 ? 'handler-failed' : undefined, {});
}
