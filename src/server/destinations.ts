// The one writer of the server's configuration maps: which (address, port) are protected,
// how each is looked up (port bitmap, per-port slot, hash), and the SipHash states of the
// keys valid for it. The daemon and the tests both write through here.
// UDP destinations (protocol "udp") have no tags: a bit in spak_udp_ports and an entry in
// spak_udp_protected (bpf/spak_udp.h); the knock allowlist decides who passes.
import { u32 } from '../bpf/libbpf.js';
import { writtenBy, type MapSet } from './maps.js';
import { destinationState } from '../wire/option.js';
import {
  encodeDest,
  encodeDestInfo,
  encodePortSlot,
  portBit,
  SPAK_DEST_BIND_SOURCE,
  SPAK_DEST_DADDR_AT_RUN,
  SPAK_DEST_LISTS,
  SPAK_MAX_DESTS,
  SPAK_MAX_KEYS,
  SPAK_PORT_ANY,
  SPAK_PORT_SEVERAL,
  SPAK_PORT_SINGLE,
  SPAK_PORT_UNSET,
  SPAK_PORT_WORDS,
} from '../wire/layout.js';
import { addrTo16 } from '../wire/address.js';

/** "*" protects a port on every address of both families. */
export const ALL_ADDRESSES = '*';

export interface ProtectedDest {
  /** An IPv4 or IPv6 address, a family's all-zero address (every address of it), or "*". */
  address: string;
  port: number;
  /** Tags must cover the client's source address (off for clients behind NAT). */
  bindSource?: boolean | undefined;
  /** Behind DNAT: what clients dial, and so what their tags are bound to. */
  dialAddress?: string | undefined;
  dialPort?: number | undefined;
  /** TCP (SYN tags, knock allowlist, always-allow) or UDP (knock allowlist, always-allow). Default tcp. */
  protocol?: 'tcp' | 'udp' | undefined;
}

export interface ServerKey {
  id: number;
  key: Buffer;
}

/** The maps this module writes (server/maps.ts). */
export const DESTINATION_MAPS = writtenBy('server/destinations.ts');
export type DestinationMaps = MapSet<(typeof DESTINATION_MAPS)[number]>;

const V4_ANY = '0.0.0.0';
const V6_ANY = '::';

export function isWildcard(address: string): boolean {
  return address === ALL_ADDRESSES || addrTo16(address).equals(addrTo16(V4_ANY)) || addrTo16(address).equals(addrTo16(V6_ANY));
}

/** One-line errors for what the maps cannot express; checked before anything is written. */
export function checkDestinations(protect: ProtectedDest[], keys: ServerKey[]): void {
  if (keys.length === 0) throw new Error('no keys: give at least one');
  if (keys.length > SPAK_MAX_KEYS) throw new Error(`${keys.length} keys: at most ${SPAK_MAX_KEYS} can be valid at once (rotation needs two)`);
  const ids = new Set<number>();
  for (const k of keys) {
    if (ids.has(k.id)) throw new Error(`key id ${k.id} is given twice`);
    ids.add(k.id);
  }
  if (protect.length === 0) throw new Error('nothing to protect');
  if (protect.length > SPAK_MAX_DESTS) throw new Error(`${protect.length} destinations: at most ${SPAK_MAX_DESTS}`);
  const seen = new Set<string>();
  for (const d of protect) {
    const proto = protocolOf(d);
    if (proto !== 'tcp' && proto !== 'udp') throw new Error(`${d.address} port ${d.port}: protocol ${JSON.stringify(proto)} is neither tcp nor udp`);
    const where = `${d.address} ${proto} port ${d.port}`;
    const id = `${d.address === ALL_ADDRESSES ? '*' : addrTo16(d.address).toString('hex')}/${proto}/${d.port}`;
    if (seen.has(id)) throw new Error(`${where} is protected twice`);
    seen.add(id);
    if (proto === 'udp' && (d.bindSource || d.dialAddress !== undefined || d.dialPort !== undefined))
      throw new Error(`${where}: bindSource, dialAddress and dialPort are SYN-tag settings, for tcp only`);
    if (d.dialAddress !== undefined && isWildcard(d.address))
      throw new Error(`${where}: a dial address needs one protected address, not a wildcard`);
    if (d.address === ALL_ADDRESSES && protect.some((o) => o !== d && o.port === d.port && protocolOf(o) === proto))
      throw new Error(`${proto} port ${d.port}: "*" already protects every address; remove the other entries for it`);
  }
}

/** Clears what an earlier call wrote (tests reconfigure one loaded program many times). */
function clearDestinations(m: DestinationMaps): void {
  for (let w = 0; w < SPAK_PORT_WORDS; w++) {
    const key = u32(w);
    const word = m.spak_ports.lookup(key);
    if (!word || word.readBigUInt64LE(0) === 0n) continue;
    m.spak_ports.update(key, Buffer.alloc(8));
    for (let bit = 0; bit < 64; bit++)
      if ((word.readBigUInt64LE(0) >> BigInt(bit)) & 1n)
        m.spak_port_slots.update(u32(w * 64 + bit), encodePortSlot({ addr: V6_ANY, mode: SPAK_PORT_UNSET, destIdx: 0 }));
  }
  for (let w = 0; w < SPAK_PORT_WORDS; w++) {
    const word = m.spak_udp_ports.lookup(u32(w));
    if (word && word.readBigUInt64LE(0) !== 0n) m.spak_udp_ports.update(u32(w), Buffer.alloc(8));
  }
  for (const map of [m.spak_protected, m.spak_protected_addrs, m.spak_udp_protected]) for (const key of map.keys()) map.delete(key);
}

export function protocolOf(d: Pick<ProtectedDest, 'protocol'>): 'tcp' | 'udp' {
  return d.protocol ?? 'tcp';
}

/**
 * UDP destinations: entries first, then the port bits (as for TCP). Their addresses join
 * spak_protected_addrs too: what the parser cannot read (tunnels, TCP fragments) is not
 * passed to them either.
 */
function writeUdpDestinations(m: DestinationMaps, protect: ProtectedDest[], counterIdx: number[]): void {
  const words = new Map<number, bigint>();
  for (const [i, d] of protect.entries()) {
    if (protocolOf(d) !== 'udp') continue;
    for (const a of d.address === ALL_ADDRESSES ? [V4_ANY, V6_ANY] : [d.address]) {
      // The value is the destination's counter index (spak_dest_counters).
      m.spak_udp_protected.update(encodeDest({ addr: a, port: d.port }), u32(counterIdx[i]!));
      m.spak_protected_addrs.update(addrTo16(a), u32(1));
    }
    const { index, bit } = portBit(d.port);
    words.set(index, (words.get(index) ?? 0n) | bit);
  }
  for (const [w, bits] of words) {
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(bits);
    m.spak_udp_ports.update(u32(w), v);
  }
}

/**
 * Writes every protected destination. The port bitmap goes last: until a port's bit is
 * set, nothing on it is gated, so a reader never sees a half-written destination.
 * protect and keys are trusted: checked once by checkConfig (options.ts).
 * lists: knock mode or always-allow is configured, so a packet that would be dropped asks the
 * allowlists first (SPAK_DEST_LISTS); without them the drop paths cost nothing more.
 * counterIdx: each destination's index into spak_dest_counters (destcounters.ts), in the order
 * of protect; by default its position.
 */
export function writeDestinations(
  m: DestinationMaps, protect: ProtectedDest[], keys: ServerKey[], lists = false, counterIdx: number[] = protect.map((_, i) => i),
): void {
  if (counterIdx.length !== protect.length) throw new Error(`${counterIdx.length} counter indexes for ${protect.length} destinations`);
  clearDestinations(m);
  writeUdpDestinations(m, protect, counterIdx);
  const perPort = new Map<number, number[]>();
  protect.forEach((d, idx) => {
    if (protocolOf(d) !== 'tcp') return; // slot idx of spak_dests stays unused
    const wildcard = isWildcard(d.address);
    const flags = (d.bindSource ? SPAK_DEST_BIND_SOURCE : 0) | (wildcard && d.dialAddress === undefined ? SPAK_DEST_DADDR_AT_RUN : 0) |
      (lists ? SPAK_DEST_LISTS : 0);
    const daddr = d.dialAddress ?? (wildcard ? undefined : d.address);
    const destKeys = keys.map((k) => ({
      keyId: k.id,
      state: destinationState(k.key, { keyId: k.id, dport: d.dialPort ?? d.port, bindSource: d.bindSource === true, ...(daddr !== undefined ? { daddr } : {}) }),
    }));
    m.spak_dests.update(u32(idx), encodeDestInfo({ flags, keys: destKeys, counterIdx: counterIdx[idx]! }));
    const addrs = d.address === ALL_ADDRESSES ? [V4_ANY, V6_ANY] : [d.address];
    for (const a of addrs) {
      m.spak_protected.update(encodeDest({ addr: a, port: d.port }), u32(idx));
      m.spak_protected_addrs.update(addrTo16(a), u32(1));
    }
    perPort.set(d.port, [...(perPort.get(d.port) ?? []), idx]);
  });
  const words = new Map<number, bigint>();
  for (const [port, idxs] of perPort) {
    const d = protect[idxs[0]!]!;
    const slot =
      idxs.length > 1 ? { addr: V6_ANY, mode: SPAK_PORT_SEVERAL, destIdx: 0 }
        : d.address === ALL_ADDRESSES ? { addr: V6_ANY, mode: SPAK_PORT_ANY, destIdx: idxs[0]! }
          : { addr: d.address, mode: SPAK_PORT_SINGLE, destIdx: idxs[0]! };
    m.spak_port_slots.update(u32(port), encodePortSlot(slot));
    const { index, bit } = portBit(port);
    words.set(index, (words.get(index) ?? 0n) | bit);
  }
  for (const [w, bits] of words) {
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(bits);
    m.spak_ports.update(u32(w), v);
  }
}

