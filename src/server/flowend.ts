// Ending the flows of addresses that lost their access (a revoked knock client): the flow table's
// entries from them go, except TCP connections the kernel holds ESTABLISHED, which live on as any
// connection opened inside a window does. A UDP flow has no such state to ask, so it always goes.
import { readFileSync } from 'node:fs';
import type { BpfMap } from '../bpf/libbpf.js';
import { addrFrom16, addrTo16 } from '../wire/address.js';
import { decodeFlowKey } from '../wire/layout.js';

const IPPROTO_UDP = 17;
const TCP_ESTABLISHED = '01';

/** One /proc/net/tcp{,6} address ("0100007F:1F90": host-order 32-bit words, then the port) as "addr port". */
function procAddr(field: string): string {
  const [hex, port] = field.split(':') as [string, string];
  const b = Buffer.alloc(hex.length / 2);
  for (let i = 0; i < hex.length / 8; i++) b.writeUInt32LE(parseInt(hex.slice(i * 8, i * 8 + 8), 16), i * 4);
  const a16 = b.length === 4 ? Buffer.concat([Buffer.from('00000000000000000000ffff', 'hex'), b]) : b;
  return `${addrFrom16(a16)} ${parseInt(port, 16)}`;
}

/** The ESTABLISHED TCP connections of this network namespace, as "remote port local port". */
export function establishedTcp(files = ['/proc/net/tcp', '/proc/net/tcp6']): Set<string> {
  const out = new Set<string>();
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue; // no IPv6 here
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || f[3] !== TCP_ESTABLISHED) continue;
      out.add(`${procAddr(f[2]!)} ${procAddr(f[1]!)}`);
    }
  }
  return out;
}

/**
 * Deletes the flow entries from `addrs` (UDP, and TCP not ESTABLISHED in `established`); returns
 * how many went.
 */
export function endFlowsFrom(flows: BpfMap, addrs: Iterable<string>, established: ReadonlySet<string> = establishedTcp()): number {
  const from = new Set([...addrs].map((a) => addrFrom16(addrTo16(a))));
  if (from.size === 0) return 0;
  let n = 0;
  for (const raw of flows.keys()) {
    const k = decodeFlowKey(raw);
    if (!from.has(k.saddr)) continue;
    if (k.proto !== IPPROTO_UDP && established.has(`${k.saddr} ${k.sport} ${k.daddr} ${k.dport}`)) continue;
    if (flows.delete(raw)) n++;
  }
  return n;
}
