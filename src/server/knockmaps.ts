// The one writer of the server's knock maps: the knock port and rate limit (spak_knock_config),
// each client's prefilter key by client id (spak_knock_clients), and the tags of accepted knocks
// (spak_knock_accepted, markKnockAccepted), whose exact repeats XDP drops.
// A client left out of the list is removed from the map: that is how a revoked client's
// next knock dies in XDP. Keys arrive derived (src/knock/prefilter.ts): the kernel side
// knows ids and 16-byte keys, not X25519.
//
// The rate and burst apply twice in XDP (bpf/spak_knock.h): per source address to datagrams
// that fail the prefilter, and per client id to knocks that pass it.
import { writtenBy, type MapSet } from './maps.js';
import { encodeKnockConfig, SPAK_KNOCK_DEFAULT_BURST, SPAK_KNOCK_DEFAULT_RATE, SPAK_MAX_KNOCK_CLIENTS } from '../wire/layout.js';
import { SPAK_KNOCK_LEN, SPAK_KNOCK_OFF_CLIENT_ID, SPAK_KNOCK_OFF_TAG, SPAK_KNOCK_PREFILTER_KEY_LEN, SPAK_KNOCK_TAG_LEN } from '../wire/knock.js';

export interface KnockMapOptions {
  /** UDP port the knocks come to, on every local address. */
  port: number;
  /** Client id (as the datagram carries it) -> that client's prefilter key. */
  clients: ReadonlyMap<number, Buffer>;
  /**
   * Knocks per second (SPAK_KNOCK_DEFAULT_RATE): per source address for datagrams that fail the
   * prefilter, per client for knocks that pass it.
   */
  rate?: number | undefined;
  /** Knocks at once, for the same two budgets (SPAK_KNOCK_DEFAULT_BURST). */
  burst?: number | undefined;
}

/** The maps this module writes (server/maps.ts). */
export const KNOCK_MAPS = writtenBy('server/knockmaps.ts');
export type KnockMaps = MapSet<(typeof KNOCK_MAPS)[number]>;

const NS_PER_S = 1_000_000_000;
const MAX_BURST = 1_000_000;

/** One-line errors for what the maps cannot express; checked before anything is written. */
export function checkKnockMaps(o: KnockMapOptions): void {
  const rate = o.rate ?? SPAK_KNOCK_DEFAULT_RATE;
  const burst = o.burst ?? SPAK_KNOCK_DEFAULT_BURST;
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new Error(`knock port ${o.port}: expected 1..65535`);
  if (!Number.isFinite(rate) || rate <= 0 || rate > NS_PER_S) throw new Error(`knock rate ${rate}: expected more than 0 and at most ${NS_PER_S} per second`);
  if (!Number.isInteger(burst) || burst < 1 || burst > MAX_BURST) throw new Error(`knock burst ${burst}: expected 1..${MAX_BURST}`);
  if (o.clients.size > SPAK_MAX_KNOCK_CLIENTS) throw new Error(`${o.clients.size} knock clients: at most ${SPAK_MAX_KNOCK_CLIENTS}`);
  for (const [id, key] of o.clients) {
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new Error(`knock client id ${id}: expected a 32-bit unsigned number`);
    if (key.length !== SPAK_KNOCK_PREFILTER_KEY_LEN) throw new Error(`knock client ${id}: prefilter key of ${key.length} bytes, expected ${SPAK_KNOCK_PREFILTER_KEY_LEN}`);
  }
}

/** The map key: a __be32, as the datagram carries the id. */
const idKey = (id: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(id >>> 0);
  return b;
};

/**
 * Writes knock mode, or turns it off (undefined). Clients go in before the port is set, and
 * the port is cleared before clients go out, so XDP never judges against a half-written list.
 * The value of spak_knock_clients (struct spak_key) is the 16 key bytes as they are.
 * `o` is trusted: checked by checkConfig (options.ts) or checkKnockMaps.
 */
export function writeKnockMaps(m: KnockMaps, o: KnockMapOptions | undefined): void {
  const zero = Buffer.alloc(4);
  if (!o) {
    m.spak_knock_config.update(zero, encodeKnockConfig({ port: 0, intervalNs: 0n, burstNs: 0n }));
    for (const key of m.spak_knock_clients.keys()) m.spak_knock_clients.delete(key);
    return;
  }
  const want = new Set<string>();
  for (const [id, key] of o.clients) {
    const k = idKey(id);
    want.add(k.toString('hex'));
    m.spak_knock_clients.update(k, key);
  }
  for (const key of m.spak_knock_clients.keys()) if (!want.has(key.toString('hex'))) m.spak_knock_clients.delete(key);
  const intervalNs = BigInt(Math.max(1, Math.round(NS_PER_S / (o.rate ?? SPAK_KNOCK_DEFAULT_RATE))));
  const burst = BigInt(o.burst ?? SPAK_KNOCK_DEFAULT_BURST);
  m.spak_knock_config.update(zero, encodeKnockConfig({ port: o.port, intervalNs, burstNs: intervalNs * burst }));
}

/**
 * Marks an accepted knock (the whole datagram, as it passed XDP): its exact repeats die in XDP
 * (drop_knock_repeat) instead of costing an HPKE open each. Key: the prefilter tag's 8 bytes as
 * the datagram carries them; value: the client id. The table is an LRU (SPAK_KNOCK_ACCEPTED_CAPACITY):
 * the oldest marks go first, and a repeat of one forgotten is still refused by the replay cache.
 */
export function markKnockAccepted(m: Pick<KnockMaps, 'spak_knock_accepted'>, datagram: Buffer): void {
  if (datagram.length !== SPAK_KNOCK_LEN) throw new Error(`knock of ${datagram.length} bytes, expected ${SPAK_KNOCK_LEN}`);
  m.spak_knock_accepted.update(
    datagram.subarray(SPAK_KNOCK_OFF_TAG, SPAK_KNOCK_OFF_TAG + SPAK_KNOCK_TAG_LEN),
    datagram.subarray(SPAK_KNOCK_OFF_CLIENT_ID, SPAK_KNOCK_OFF_CLIENT_ID + 4),
  );
}
