/**
 * NATS's service API ("micro", ADR-32), as far as natsgw speaks it: the
 * subjects a service answers on, and the JSON it answers with. Services
 * answer `$SRV.<VERB>`, `$SRV.<VERB>.<name>` and `$SRV.<VERB>.<name>.<id>`
 * for PING, INFO and STATS, every instance (no queue group), so a request
 * to the bare subject collects one answer per instance on the account. The
 * shapes are those NATS's tooling checks (`io.nats.micro.v1.*`, JSON
 * Schemas in gateway/schema/nats-micro-v1/).
 */

export const MICRO_PREFIX = '$SRV';
export const MICRO_VERBS = ['PING', 'INFO', 'STATS'] as const;
export type MicroVerb = (typeof MICRO_VERBS)[number];

export const PING_RESPONSE = 'io.nats.micro.v1.ping_response';
export const INFO_RESPONSE = 'io.nats.micro.v1.info_response';
export const STATS_RESPONSE = 'io.nats.micro.v1.stats_response';

/** Service and endpoint names: ADR-32's `^[A-Za-z0-9_-]+$`. */
export const MICRO_NAME_PATTERN = /^[A-Za-z0-9_-]+$/;
/** Semantic version (semver.org's pattern, as the schemas have it). Checked only on strings of at most 256 characters. */
export const SEMVER_PATTERN =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;
export const MAX_VERSION_LENGTH = 256;

export const isMicroName = (s: string): boolean => s.length > 0 && s.length <= 256 && MICRO_NAME_PATTERN.test(s);
export const isSemver = (s: string): boolean => s.length >= 5 && s.length <= MAX_VERSION_LENGTH && SEMVER_PATTERN.test(s);

/**
 * The service name a mount gets by default: its subject with dots as
 * dashes (`api.foo` → `api-foo`), which is always a valid name.
 */
export const defaultMicroName = (mount: string): string => mount.replace(/\./g, '-');

/** The three subjects one instance answers `verb` on. */
export function microSubjects(verb: MicroVerb, name: string, id: string): string[] {
  return [`${MICRO_PREFIX}.${verb}`, `${MICRO_PREFIX}.${verb}.${name}`, `${MICRO_PREFIX}.${verb}.${name}.${id}`];
}

export interface MicroIdentity {
  name: string;
  id: string;
  version: string;
  metadata: Record<string, string>;
}

export interface MicroEndpointInfo {
  name: string;
  subject: string;
  queue_group: string;
  metadata: Record<string, string> | null;
}

export interface MicroEndpointStats {
  name: string;
  subject: string;
  queue_group: string;
  num_requests: number;
  num_errors: number;
  last_error: string;
  /** Nanoseconds. */
  processing_time: number;
  /** Nanoseconds. */
  average_processing_time: number;
}

export type PingResponse = MicroIdentity & { type: typeof PING_RESPONSE };
export type InfoResponse = MicroIdentity & { type: typeof INFO_RESPONSE; description: string; endpoints: MicroEndpointInfo[] };
export type StatsResponse = MicroIdentity & { type: typeof STATS_RESPONSE; started: string; endpoints: MicroEndpointStats[] };

/**
 * NATS's standard service error headers (ADR-32): a reply carrying them is
 * an error, whatever its payload. The gateway answers HTTP with the code as
 * status when it is one (400–599; anything else is 502) and the text as the
 * problem's detail; the SDK sets both on the 5xx problems it sends itself.
 */
export const SERVICE_ERROR_CODE_HEADER = 'Nats-Service-Error-Code';
export const SERVICE_ERROR_HEADER = 'Nats-Service-Error';
/** Longest error text carried on (a service's error text may be anything). */
export const MAX_SERVICE_ERROR_TEXT = 1024;

/** The HTTP status for a service error code. */
export function serviceErrorStatus(code: string): number {
  if (code.length !== 3 || code < '400' || code > '599' || !/^[0-9]{3}$/.test(code)) return 502;
  return Number(code);
}
