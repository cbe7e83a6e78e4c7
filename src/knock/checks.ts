/**
 * What the daemon checks after a knock opens: freshness, the server address it was sent
 * to, and the nonce (replay). Pure functions and a bounded in-memory replay cache; making
 * the cache outlive a restart is the daemon's part (entries() / restore()).
 */
import { addrTo16 } from '../wire/address.js';
import type { KnockPlain, KnockReject } from './datagram.js';

export const DEFAULT_KNOCK_WINDOW_S = 30;

/** null when the timestamp is within +-windowS of nowS. */
export function checkFreshness(timestamp: number, nowS: number, windowS = DEFAULT_KNOCK_WINDOW_S): 'expired' | 'future' | null {
  if (timestamp < nowS - windowS) return 'expired';
  if (timestamp > nowS + windowS) return 'future';
  return null;
}

/** Remembers nonces until they could no longer pass the freshness check anyway. */
export class ReplayCache {
  private readonly expiry = new Map<string, number>();

  /** onRecord sees each entry as it is recorded (the daemon persists it); if it throws, so does seen(). */
  constructor(
    private readonly windowS = DEFAULT_KNOCK_WINDOW_S,
    private readonly capacity = 1_000_000,
    private readonly onRecord?: (key: string, until: number) => void,
  ) {}

  /** True when (client, nonce) was seen; records it otherwise. */
  seen(clientId: number, nonce: Buffer, timestamp: number, nowS: number): boolean {
    const key = `${clientId.toString(16)}:${nonce.toString('hex')}`;
    const until = this.expiry.get(key);
    if (until !== undefined && until >= nowS) return true;
    if (this.expiry.size >= this.capacity) this.prune(nowS);
    // A full cache of live entries must refuse rather than forget: forgetting allows replay.
    if (this.expiry.size >= this.capacity) return true;
    // Valid until the knock's own timestamp leaves the window, at least.
    const keepUntil = Math.max(timestamp, nowS) + this.windowS;
    this.expiry.set(key, keepUntil);
    this.onRecord?.(key, keepUntil);
    return false;
  }

  prune(nowS: number): void {
    for (const [k, until] of this.expiry) if (until < nowS) this.expiry.delete(k);
  }

  get size(): number {
    return this.expiry.size;
  }

  entries(): [string, number][] {
    return [...this.expiry];
  }

  restore(entries: Iterable<[string, number]>): void {
    for (const [k, until] of entries) this.expiry.set(k, until);
  }
}

export interface CheckOptions {
  nowS: number;
  windowS?: number;
  /** The server's own addresses (as clients address it); empty or absent: not checked. */
  serverAddrs?: string[];
  replay?: ReplayCache;
}

/** The post-open checks, in order; the replay cache records only knocks that pass the rest. */
export function checkKnock(clientId: number, p: KnockPlain, o: CheckOptions): KnockReject | null {
  const fresh = checkFreshness(p.timestamp, o.nowS, o.windowS);
  if (fresh) return fresh;
  if (o.serverAddrs && o.serverAddrs.length > 0) {
    const mine = addrTo16(p.serverAddr);
    if (!o.serverAddrs.some((a) => addrTo16(a).equals(mine))) return 'wrong_server';
  }
  if (o.replay?.seen(clientId, p.nonce, p.timestamp, o.nowS)) return 'replayed';
  return null;
}
