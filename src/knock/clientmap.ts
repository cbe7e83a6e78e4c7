// The one writer of the server's knock maps: the knock port and per-source rate limit
// (spak_knock_config) and each client's prefilter key by client id (spak_knock_clients).
// A client left out of the list is removed from the map: that is how a revoked client's
// next knock dies in XDP. The daemon and the tests both write through here.
import type { KeyObject } from 'node:crypto';
import type { BpfMap } from '../bpf/libbpf.js';
import {
  encodeKnockConfig,
  SPAK_KNOCK_DEFAULT_BURST,
  SPAK_KNOCK_DEFAULT_RATE,
  SPAK_MAX_KNOCK_CLIENTS,
} from '../wire/layout.js';
import { clientIdOf, formatClientId, parsePrivatePem, parsePublicPem, prefilterKey } from './keys.js';

export interface KnockOptions {
  /** UDP port the knocks come to, on every local address. */
  port: number;
  /** The clients' public keys (KeyObjects or PEM text). */
  clients: (KeyObject | string)[];
  /** The server's private key (KeyObject or PEM text). */
  serverKey: KeyObject | string;
  /** Knocks per second per source address (SPAK_KNOCK_DEFAULT_RATE). */
  rate?: number | undefined;
  /** Knocks a source may send at once (SPAK_KNOCK_DEFAULT_BURST). */
  burst?: number | undefined;
}

/** The maps this module writes, by their names in server.bpf.o. */
export interface KnockMaps {
  spak_knock_config: BpfMap;
  spak_knock_clients: BpfMap;
}

const NS_PER_S = 1_000_000_000;
const MAX_BURST = 1_000_000;

/** One-line errors for what the maps cannot express; checked before anything is written. */
export function checkKnock(o: KnockOptions): void {
  const rate = o.rate ?? SPAK_KNOCK_DEFAULT_RATE;
  const burst = o.burst ?? SPAK_KNOCK_DEFAULT_BURST;
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new Error(`knock port ${o.port}: expected 1..65535`);
  if (!Number.isFinite(rate) || rate <= 0 || rate > NS_PER_S) throw new Error(`knock rate ${rate}: expected more than 0 and at most ${NS_PER_S} per second`);
  if (!Number.isInteger(burst) || burst < 1 || burst > MAX_BURST) throw new Error(`knock burst ${burst}: expected 1..${MAX_BURST}`);
  if (o.clients.length > SPAK_MAX_KNOCK_CLIENTS) throw new Error(`${o.clients.length} knock clients: at most ${SPAK_MAX_KNOCK_CLIENTS}`);
}

const idKey = (id: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(id >>> 0); // __be32: as the datagram carries it
  return b;
};

/**
 * Client id (map key) -> prefilter key (map value: struct spak_key is the 16 key bytes read
 * as two little-endian words, i.e. the raw bytes). Two keys with one id cannot both be served.
 */
export function knockClientEntries(o: Pick<KnockOptions, 'clients' | 'serverKey'>): Map<string, Buffer> {
  const server = typeof o.serverKey === 'string' ? parsePrivatePem(o.serverKey, 'server key') : o.serverKey;
  const out = new Map<string, Buffer>();
  o.clients.forEach((c, i) => {
    const pub = typeof c === 'string' ? parsePublicPem(c, `knock client ${i + 1}`) : c;
    const id = clientIdOf(pub);
    const key = idKey(id).toString('hex');
    if (out.has(key)) throw new Error(`knock client ${i + 1}: client id ${formatClientId(id)} is given twice (the same key, or a colliding one)`);
    out.set(key, prefilterKey(server, pub, 'server'));
  });
  return out;
}

/**
 * Writes knock mode, or turns it off (undefined). Clients go in before the port is set, and
 * the port is cleared before clients go out, so XDP never judges against a half-written list.
 */
export function writeKnock(m: KnockMaps, o: KnockOptions | undefined): void {
  const zero = Buffer.alloc(4);
  if (!o) {
    m.spak_knock_config.update(zero, encodeKnockConfig({ port: 0, intervalNs: 0n, burstNs: 0n }));
    for (const key of m.spak_knock_clients.keys()) m.spak_knock_clients.delete(key);
    return;
  }
  checkKnock(o);
  const entries = knockClientEntries(o);
  for (const [hex, value] of entries) m.spak_knock_clients.update(Buffer.from(hex, 'hex'), value);
  for (const key of m.spak_knock_clients.keys()) if (!entries.has(key.toString('hex'))) m.spak_knock_clients.delete(key);
  const intervalNs = BigInt(Math.max(1, Math.round(NS_PER_S / (o.rate ?? SPAK_KNOCK_DEFAULT_RATE))));
  const burst = BigInt(o.burst ?? SPAK_KNOCK_DEFAULT_BURST);
  m.spak_knock_config.update(zero, encodeKnockConfig({ port: o.port, intervalNs, burstNs: intervalNs * burst }));
}
