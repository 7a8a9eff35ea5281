/**
 * Trace context at the gateway (PROTOCOL.md §13, README "Trace context"):
 * - a client's valid `traceparent` (one field) and `tracestate` go on to the
 *   service, with the gateway's span as the parent when a tracer provider
 *   records one; an invalid or repeated traceparent is dropped, and its
 *   tracestate with it;
 * - a request without one gets a new sampled trace with probability
 *   `sampling` (`auto`: 1 when a tracer provider is registered, else 0);
 *   the others carry no trace context (the request id still ties their logs
 *   together), so a gateway nobody traces pays nothing per request.
 */
import { SpanKind, type Span } from '@opentelemetry/api';
import { formatTraceparent, newSpanId, newTraceId, normalizeTracestate, parseTraceparent, type TraceParent } from '@natsgw/service-sdk/protocol';
import { endServerSpan, remoteParent, spanMethod, TracerLookup } from '@natsgw/service-sdk/tracing';
import type { Exchange } from './exchange.js';

export type TraceSampling = number | 'auto';

export class TraceStart {
  private readonly tracers: TracerLookup;

  constructor(
    private readonly sampling: TraceSampling,
    version: string,
  ) {
    this.tracers = new TracerLookup('natsgw', version);
  }

  /** Sets the exchange's outgoing trace context, and starts its span when a provider records one. Runs inside the uWS handler. */
  begin(ex: Exchange, now: number): void {
    let parent: TraceParent | undefined;
    if (ex.traceparentIn !== undefined) {
      parent = ex.traceparentCount === 1 ? parseTraceparent(ex.traceparentIn) : undefined;
      if (parent !== undefined && ex.tracestateIn !== undefined) ex.tracestate = normalizeTracestate(ex.tracestateIn);
    }
    const tracer = this.tracers.get(now);
    if (parent === undefined) {
      const ratio = this.sampling === 'auto' ? (tracer === undefined ? 0 : 1) : this.sampling;
      if (ratio === 0 || (ratio < 1 && Math.random() >= ratio)) return;
    }
    if (tracer === undefined) {
      // Nothing records here: pass the client's context on as it is, or start one.
      // (A version-00 value is valid only at its exact length: it goes on byte for byte, flags and all.)
      if (parent !== undefined) ex.traceparent = ex.traceparentIn!.startsWith('00-') ? ex.traceparentIn! : formatTraceparent(parent.traceId, parent.spanId, (parent.flags & 1) === 1);
      else ex.traceparent = formatTraceparent(newTraceId(), newSpanId(), true);
      ex.traceId = ex.traceparent.slice(3, 35);
      return;
    }
    const span = tracer.startSpan(
      spanMethod(ex.method),
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': spanMethod(ex.method),
          'url.path': ex.rawPath,
          'server.address': ex.host,
          'client.address': ex.clientAddress(),
        },
      },
      parent === undefined ? undefined : remoteParent(parent, ex.tracestate),
    );
    const sc = span.spanContext();
    ex.traceId = sc.traceId;
    ex.traceparent = formatTraceparent(sc.traceId, sc.spanId, (sc.traceFlags & 1) === 1);
    if (sc.traceState !== undefined) ex.tracestate = sc.traceState.serialize() || undefined;
    if (span.isRecording()) ex.span = span;
  }
}

/** Ends the exchange's span (if it has one) when the request is over. */
export function endExchangeSpan(ex: Exchange, aborted: boolean): void {
  const span: Span | undefined = ex.span;
  if (span === undefined) return;
  ex.span = undefined;
  const target = ex.route?.key ?? ex.raw?.key;
  if (target !== undefined) span.updateName(`${spanMethod(ex.method)} ${target}`);
  // A client that left is no server error, nor is a 4xx; a stream cut off is.
  const errorType = ex.failure !== undefined && (ex.status >= 500 || ex.streamFailure !== undefined) ? ex.failure : undefined;
  endServerSpan(span, ex.status, errorType, {
    'natsgw.request_id': ex.requestId,
    // Known only now: a request that went over NATS (not to an HTTP override, nor refused before it had a subject).
    ...(ex.route === undefined && ex.subject !== '' ? { 'messaging.system': 'nats', 'messaging.destination.name': ex.subject } : {}),
    ...(aborted ? { 'natsgw.client_aborted': true } : {}),
    ...(target !== undefined ? { 'natsgw.route': target } : {}),
    ...(ex.upstream !== '' ? { 'natsgw.upstream': ex.upstream } : {}),
  });
}
