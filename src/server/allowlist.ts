// Writer of the XDP allowlist (spak_allow): (address, protocol, port) -> expiry, idle extension
// and grace, all CLOCK_MONOTONIC ns. Minimal version so the knock daemon builds and its tests run
// against a real map; the XDP helper's version replaces it on merge (same signatures).
import type { BpfMap } from '../bpf/libbpf.js';
import { addrTo16 } from '../wire/layout.js';

export type AllowProto = 'tcp' | 'udp';
export interface AllowKey { addr: string; proto: AllowProto; port: number }
export interface AllowEntry extends AllowKey { expiresNs: bigint; idleNs?: bigint; graceNs?: bigint }

export const SPAK_ALLOW_KEY_LEN = 20;
export const SPAK_ALLOW_VALUE_LEN = 24;
const PROTO: Record<AllowProto, number> = { tcp: 6, udp: 17 };

/** struct spak_allow_key: addr[16] (IPv4-mapped), __be16 port, __u8 proto, __u8 pad. */
export function encodeAllowKey(k: AllowKey): Buffer {
  const proto = PROTO[k.proto];
  if (proto === undefined) throw new TypeError(`bad protocol ${String(k.proto)}`);
  if (!Number.isInteger(k.port) || k.port < 1 || k.port > 65535) throw new RangeError(`bad port ${k.port}`);
  const b = Buffer.alloc(SPAK_ALLOW_KEY_LEN);
  addrTo16(k.addr).copy(b, 0);
  b.writeUInt16BE(k.port, 16);
  b[18] = proto;
  return b;
}

/** struct spak_allow: expires_ns, idle_ns, grace_ns (host order, little-endian here). */
export function encodeAllowValue(e: Pick<AllowEntry, 'expiresNs' | 'idleNs' | 'graceNs'>): Buffer {
  const b = Buffer.alloc(SPAK_ALLOW_VALUE_LEN);
  b.writeBigUInt64LE(e.expiresNs, 0);
  b.writeBigUInt64LE(e.idleNs ?? 0n, 8);
  b.writeBigUInt64LE(e.graceNs ?? 0n, 16);
  return b;
}

export function allowSource(map: BpfMap, e: AllowEntry): void {
  map.update(encodeAllowKey(e), encodeAllowValue(e));
}

/** True when there was an entry to remove. */
export function revokeSource(map: BpfMap, key: AllowKey): boolean {
  return map.delete(encodeAllowKey(key));
}
