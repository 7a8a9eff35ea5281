/**
 * An entry with only a policy: its subject tree stays on NATS (the
 * envelope), and its blocks apply there (and below, where no more specific
 * key sets them). A target above it (an override, a raw route) still
 * applies to its paths.
 */
import type { CompiledPolicy } from '../policy/route-policy.js';
import type { PolicyOnlyConfig } from './route-schema.js';

export class PolicyRoute {
  readonly kind = 'policy';
  policy: CompiledPolicy | undefined = undefined;

  constructor(
    readonly key: string,
    readonly revision: number,
    readonly config: PolicyOnlyConfig,
  ) {}
}
