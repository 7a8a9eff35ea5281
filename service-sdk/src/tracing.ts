/**
 * OpenTelemetry spans through `@opentelemetry/api` alone, shared by the
 * gateway and the SDK. The API is a no-op until the application registers a
 * tracer provider (its own OpenTelemetry SDK setup); until then nothing here
 * makes a span, a context or an attribute, so tracing costs a request one
 * property read. The W3C header syntax is in protocol/trace-context.ts.
 */
import { createTraceState, ProxyTracerProvider, ROOT_CONTEXT, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api';
import type { TraceParent } from './protocol/trace-context.js';

/** How often a missing tracer provider is looked for again (ms): registering one takes effect within this. */
const LOOKUP_INTERVAL_MS = 1000;

/**
 * The tracer of the registered provider, or undefined while none is.
 * `get` is called per request with a clock reading it already had.
 */
export class TracerLookup {
  private tracer: Tracer | undefined = undefined;
  private checkedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly name: string,
    private readonly version?: string,
  ) {}

  get(now: number): Tracer | undefined {
    if (this.tracer === undefined && now - this.checkedAt >= LOOKUP_INTERVAL_MS) {
      this.checkedAt = now;
      const provider = trace.getTracerProvider();
      // The API's global is a proxy that hands out no-op tracers until a provider is set behind it.
      this.tracer = provider instanceof ProxyTracerProvider ? provider.getDelegateTracer(this.name, this.version) : provider.getTracer(this.name, this.version);
    }
    return this.tracer;
  }
}

/** The context of a span in another process (from its traceparent), as a parent. */
export function remoteParent(parent: TraceParent, tracestate: string | undefined): Context {
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: parent.traceId,
    spanId: parent.spanId,
    traceFlags: parent.flags & 1,
    isRemote: true,
    traceState: tracestate === undefined ? undefined : createTraceState(tracestate),
  });
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);

/** `http.request.method` by the semantic conventions: a known method, or `_OTHER` (so a client cannot mint span names). */
export const spanMethod = (method: string): string => (KNOWN_METHODS.has(method) ? method : '_OTHER');

/**
 * Ends a server span with its HTTP status. An error (span status ERROR,
 * `error.type`) is a 5xx, or whatever `errorType` names; a 4xx is the
 * client's mistake, not the server's, by the conventions.
 */
export function endServerSpan(span: Span, status: number, errorType: string | undefined, attributes: Attributes): void {
  span.setAttributes(attributes);
  if (status > 0) span.setAttribute('http.response.status_code', status);
  const error = errorType ?? (status >= 500 ? String(status) : undefined);
  if (error !== undefined) {
    span.setAttribute('error.type', error);
    span.setStatus({ code: SpanStatusCode.ERROR });
  }
  span.end();
}
