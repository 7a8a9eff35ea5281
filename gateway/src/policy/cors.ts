/**
 * The cors block (Fetch standard, "CORS protocol"): which origins may read
 * responses, preflights answered by the gateway, and the Access-Control-*
 * fields on responses. A disallowed origin gets no CORS field at all; the
 * browser then keeps the response from the page.
 */
import type { CorsConfig } from './policy-schema.js';

/** Methods a browser sends without a preflight, always allowed (Fetch: CORS-safelisted methods). */
const SAFELISTED_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST']);

export type Preflight = { ok: true; headers: string[] } | { ok: false; reason: string; headers: string[] };

export class CorsPolicy {
  private readonly exact = new Set<string>();
  /** `https://*.example.com:8443` as its scheme part and its suffix (`.example.com:8443`). */
  private readonly patterns: { scheme: string; suffix: string }[] = [];
  private readonly any: boolean;
  private readonly anyMethod: boolean;
  private readonly anyHeader: boolean;
  private readonly methods: ReadonlySet<string>;
  private readonly headers: ReadonlySet<string>;
  private readonly expose: string;
  private readonly maxAge: string;
  /** The response varies with Origin unless every origin gets `*`. */
  readonly varies: boolean;

  constructor(readonly config: CorsConfig) {
    this.any = config.origins.includes('*');
    for (const o of config.origins) {
      if (o === '*') continue;
      const lower = o.toLowerCase();
      const star = lower.indexOf('://*.');
      if (star === -1) this.exact.add(lower);
      else this.patterns.push({ scheme: lower.slice(0, star + 3), suffix: lower.slice(star + 4) });
    }
    this.anyMethod = config.methods.includes('*');
    this.anyHeader = config.allowHeaders.includes('*');
    this.methods = new Set(config.methods);
    this.headers = new Set(config.allowHeaders.map((h) => h.toLowerCase()));
    this.expose = config.exposeHeaders.join(', ');
    this.maxAge = String(config.maxAgeSec);
    this.varies = !(this.any && !config.credentials);
  }

  /** Whether `origin` (the Origin field as sent) may read responses. */
  allows(origin: string): boolean {
    if (this.any) return true;
    const o = origin.toLowerCase();
    if (this.exact.has(o)) return true;
    for (const p of this.patterns) {
      // One or more labels where the * is: something before the suffix, without a /, @ or another scheme.
      if (o.length > p.scheme.length + p.suffix.length && o.startsWith(p.scheme) && o.endsWith(p.suffix) && isHostLabels(o, p.scheme.length, o.length - p.suffix.length)) return true;
    }
    return false;
  }

  /** Fields for an actual (non-preflight) response, flattened; Vary: Origin whenever the answer depends on it. */
  responseHeaders(origin: string | undefined): string[] | undefined {
    const out: string[] = [];
    if (origin !== undefined && this.allows(origin)) {
      out.push('access-control-allow-origin', this.varies ? origin : '*');
      if (this.config.credentials) out.push('access-control-allow-credentials', 'true');
      if (this.expose !== '') out.push('access-control-expose-headers', this.expose);
    }
    if (this.varies) out.push('vary', 'Origin');
    return out.length === 0 ? undefined : out;
  }

  /** Answers a preflight (OPTIONS with Access-Control-Request-Method) for `origin`. */
  preflight(origin: string, method: string, requestHeaders: string | undefined): Preflight {
    const vary = ['vary', 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers'];
    if (!this.allows(origin)) return { ok: false, reason: `origin ${JSON.stringify(origin.slice(0, 100))} is not allowed`, headers: vary };
    if (!SAFELISTED_METHODS.has(method) && !this.anyMethod && !this.methods.has(method)) return { ok: false, reason: `method ${JSON.stringify(method.slice(0, 32))} is not allowed`, headers: vary };
    const asked: string[] = [];
    if (requestHeaders !== undefined) {
      for (const raw of requestHeaders.split(',')) {
        const h = raw.trim().toLowerCase();
        if (h === '') continue;
        // `*` never covers Authorization (Fetch: "CORS non-wildcard request-header name").
        if (!this.headers.has(h) && !(this.anyHeader && h !== 'authorization')) return { ok: false, reason: `request header ${JSON.stringify(h.slice(0, 64))} is not allowed`, headers: vary };
        asked.push(h);
        if (asked.length > 128) return { ok: false, reason: 'too many request headers', headers: vary };
      }
    }
    const out = ['access-control-allow-origin', this.varies ? origin : '*'];
    if (this.config.credentials) out.push('access-control-allow-credentials', 'true');
    out.push('access-control-allow-methods', method);
    if (asked.length > 0) out.push('access-control-allow-headers', asked.join(', '));
    out.push('access-control-max-age', this.maxAge, ...vary);
    return { ok: true, headers: out };
  }
}

/** True when o[from, to) is dot-separated labels of letters, digits and hyphens (lower case already). */
function isHostLabels(o: string, from: number, to: number): boolean {
  let labelLength = 0;
  for (let i = from; i < to; i++) {
    const c = o.charCodeAt(i);
    if (c === 46) {
      if (labelLength === 0) return false;
      labelLength = 0;
    } else if ((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45) labelLength++;
    else return false;
  }
  return labelLength > 0;
}
