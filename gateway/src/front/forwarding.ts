/**
 * X-Forwarded-For/-Proto/-Host: a trusted proxy's values are extended (its
 * chain plus its own address), anyone else's replaced — a client must not be
 * able to claim another address or scheme. Forwarded, X-Real-IP and
 * X-Forwarded-Port/-Prefix pass only from a trusted proxy (http-front.ts).
 */
import { BlockList, isIP, isIPv6 } from 'node:net';
import type { Exchange } from './exchange.js';

export interface Forwarded {
  /** The client is one of --trusted-proxies: its own forwarding headers are kept. */
  trusted: boolean;
  forwardedFor: string;
  scheme: string;
  host: string;
}

export class ForwardingPolicy {
  private readonly trusted: BlockList | undefined;

  constructor(trustedProxies: readonly string[]) {
    if (trustedProxies.length === 0) return;
    const list = new BlockList();
    for (const cidr of trustedProxies) {
      const [addr, bits] = cidr.split('/') as [string, string | undefined];
      const family = isIPv6(addr) ? 'ipv6' : 'ipv4';
      if (bits === undefined) list.addAddress(addr, family);
      else list.addSubnet(addr, Number(bits), family);
    }
    this.trusted = list;
  }

  /**
   * The client's address: `remote`, or when that is a trusted proxy, the
   * right-most X-Forwarded-For address that is not one (what a client
   * writes further left could be anything).
   */
  clientAddress(ex: Exchange, remote: string): string {
    const trusted = this.trusted;
    if (trusted === undefined || ex.forwardedFor === undefined || !trusted.check(remote, isIPv6(remote) ? 'ipv6' : 'ipv4')) return remote;
    const hops = ex.forwardedFor.split(',');
    let addr = remote;
    for (let i = hops.length - 1; i >= 0; i--) {
      addr = hops[i]!.trim();
      if (!isIP(addr) || !trusted.check(addr, isIPv6(addr) ? 'ipv6' : 'ipv4')) return addr.slice(0, 64);
    }
    return addr;
  }

  /** What to forward for a request from `remote`. */
  compute(ex: Exchange, remote: string): Forwarded {
    if (this.trusted?.check(remote, isIPv6(remote) ? 'ipv6' : 'ipv4')) {
      return {
        trusted: true,
        forwardedFor: ex.forwardedFor !== undefined ? ex.forwardedFor + ', ' + remote : remote,
        scheme: ex.forwardedProto === 'https' || ex.forwardedProto === 'http' ? ex.forwardedProto : 'http',
        host: ex.forwardedHost ?? ex.host,
      };
    }
    return { trusted: false, forwardedFor: remote, scheme: 'http', host: ex.host };
  }
}
