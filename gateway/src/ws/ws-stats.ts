/**
 * WebSocket counts of one gateway (one worker thread): what /status and the
 * metrics show. "In" is from clients, "out" is to clients.
 */
export class WsStats {
  open = 0;
  opened = 0;
  messagesIn = 0;
  messagesOut = 0;
  bytesIn = 0;
  bytesOut = 0;
  /** Upgrades the gateway refused itself (limits, shutdown, no NATS) or the service rejected. */
  rejected = 0;
  /** Closed sessions by close code (1005: no code, 1006: dropped without a close frame). */
  readonly closes = new Map<number, number>();

  closed(code: number): void {
    this.open--;
    this.closes.set(code, (this.closes.get(code) ?? 0) + 1);
  }

  /** `topics`: topics this gateway holds a NATS subscription for right now (ws-topics.ts). */
  snapshot(topics: number): WsSnapshot {
    return {
      open: this.open,
      topics,
      opened: this.opened,
      rejected: this.rejected,
      messagesIn: this.messagesIn,
      messagesOut: this.messagesOut,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      closes: Object.fromEntries([...this.closes].map(([code, n]) => [String(code), n])),
    };
  }
}

export interface WsSnapshot {
  open: number;
  topics: number;
  opened: number;
  rejected: number;
  messagesIn: number;
  messagesOut: number;
  bytesIn: number;
  bytesOut: number;
  closes: Record<string, number>;
}

/** Adds up worker threads' counts (--workers). */
export function mergeWs(all: readonly WsSnapshot[]): WsSnapshot {
  const out: WsSnapshot = { open: 0, topics: 0, opened: 0, rejected: 0, messagesIn: 0, messagesOut: 0, bytesIn: 0, bytesOut: 0, closes: {} };
  for (const s of all) {
    out.open += s.open;
    out.topics += s.topics;
    out.opened += s.opened;
    out.rejected += s.rejected;
    out.messagesIn += s.messagesIn;
    out.messagesOut += s.messagesOut;
    out.bytesIn += s.bytesIn;
    out.bytesOut += s.bytesOut;
    for (const [code, n] of Object.entries(s.closes)) out.closes[code] = (out.closes[code] ?? 0) + n;
  }
  return out;
}
