// What the knock service counts: one counter per outcome (the daemon's counters, `spak status`),
// and per client and outcome (spak_knocks_total), so one noisy client stands out.
import { KNOCK_REJECT_REASONS, type KnockRejectReason } from './decide.js';

export type KnockCounterName = 'knock_accepted' | `knock_rejected_${KnockRejectReason}`;
export const KNOCK_COUNTER_NAMES: readonly KnockCounterName[] = ['knock_accepted', ...KNOCK_REJECT_REASONS.map((r) => `knock_rejected_${r}` as const)];
/**
 * Not outcomes (a knock can be accepted and move one of these too): an accepted knock replaced the
 * client's oldest address (its maxAddresses reached), or a full allowlist evicted the oldest
 * address of the client holding the most.
 */
export const KNOCK_EVENT_NAMES = ['knock_client_address_replaced', 'knock_client_address_evicted'] as const;
export type KnockEventName = (typeof KNOCK_EVENT_NAMES)[number];
export type KnockCounters = Record<KnockCounterName | KnockEventName, number>;
/** A knock's outcome: accepted, or the reason it was rejected. */
export type KnockResult = 'accepted' | KnockRejectReason;
export interface KnockClientCount { client: string; result: KnockResult; count: number }
/** The client label of knocks that identified no known client (bad datagram, unknown id). */
export const UNKNOWN_CLIENT = '(unknown)';

export class KnockTally {
  readonly #counts = Object.fromEntries([...KNOCK_COUNTER_NAMES, ...KNOCK_EVENT_NAMES].map((n) => [n, 0])) as KnockCounters;
  readonly #byClient = new Map<string, Map<KnockResult, number>>();

  /** client: the name of the client the knock identified, null if none. */
  count(client: string | null, result: KnockResult): void {
    this.#counts[result === 'accepted' ? 'knock_accepted' : (`knock_rejected_${result}` as const)]++;
    const name = client ?? UNKNOWN_CLIENT;
    let m = this.#byClient.get(name);
    if (!m) this.#byClient.set(name, (m = new Map()));
    m.set(result, (m.get(result) ?? 0) + 1);
  }

  event(name: KnockEventName, n = 1): void {
    this.#counts[name] += n;
  }

  counters(): KnockCounters {
    return { ...this.#counts };
  }

  clientCounters(): KnockClientCount[] {
    return [...this.#byClient].flatMap(([client, m]) => [...m].map(([result, count]) => ({ client, result, count })));
  }
}
