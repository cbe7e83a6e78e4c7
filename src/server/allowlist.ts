// The one writer of the knock allowlist (spak_allow, state: adopted by the next daemon) and
// of the always-allow list (spak_always, config: written afresh by each daemon). What the
// XDP program does with them: bpf/spak_allow.h. Times are CLOCK_MONOTONIC ns, the clock of
// bpf_ktime_get_coarse_ns() (process.hrtime.bigint(), src/bpf/clock.ts monotonicNs()).
import type { BpfMap } from '../bpf/libbpf.js';
import { encodeAllowEntry, encodeAllowKey, encodeAlwaysKey, type L4Proto } from '../wire/layout.js';
import { parseCidr } from '../wire/address.js';

export interface AllowEntry {
  /** The source address to admit (IPv4 or IPv6). */
  addr: string;
  proto: L4Proto;
  /** The destination port it may reach. */
  port: number;
  /** CLOCK_MONOTONIC ns: the entry admits nothing after this. */
  expiresNs: bigint;
  /** Extension while traffic flows: a packet admitted through the entry pushes the expiry to now + idleNs (0 or absent: off). */
  idleNs?: bigint;
  /** After a TCP FIN or RST from the source, the entry expires within graceNs (0 or absent: off). */
  graceNs?: bigint;
}

export type AllowKey = Pick<AllowEntry, 'addr' | 'proto' | 'port'>;

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`port ${port} is not 1..65535`);
}

/** Admits (addr, proto, port) until expiresNs; replaces an existing entry for the same key. */
export function allowSource(map: BpfMap, e: AllowEntry): void {
  checkPort(e.port);
  map.update(encodeAllowKey(e), encodeAllowEntry({ expiresNs: e.expiresNs, idleNs: e.idleNs ?? 0n, graceNs: e.graceNs ?? 0n }));
}

/** Removes one entry; false when there was none. Connections it opened live on as flows. */
export function revokeSource(map: BpfMap, key: AllowKey): boolean {
  checkPort(key.port);
  return map.delete(encodeAllowKey(key));
}

/** Removes every entry that expired before nowNs, in batches; returns how many went. */
export function sweepAllowlist(map: BpfMap, nowNs: bigint): number {
  const stale: Buffer[] = [];
  for (const chunk of map.lookupChunks()) {
    const keySize = chunk.keys.length / chunk.count;
    const valueSize = chunk.values.length / chunk.count;
    for (let i = 0; i < chunk.count; i++)
      if (chunk.values.readBigUInt64LE(i * valueSize) < nowNs) stale.push(Buffer.from(chunk.keys.subarray(i * keySize, (i + 1) * keySize)));
  }
  return stale.length > 0 ? map.deleteBatch(stale) : 0;
}

/**
 * Replaces the always-allow list with cidrs (addresses and CIDRs, both families). New
 * entries go in before old ones go, so an address in both lists is never refused between.
 */
export function writeAlwaysAllow(map: BpfMap, cidrs: string[]): void {
  const want = new Map<string, Buffer>();
  for (const c of cidrs) {
    const key = encodeAlwaysKey(parseCidr(c));
    want.set(key.toString('hex'), key);
  }
  const one = Buffer.alloc(4);
  one.writeUInt32LE(1);
  for (const key of want.values()) map.update(key, one);
  for (const key of map.keys()) if (!want.has(key.toString('hex'))) map.delete(key);
}
