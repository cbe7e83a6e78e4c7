// Ending the flows of addresses that lost their access (a revoked knock client): the flow table's
// entries from them go, except TCP connections the kernel holds ESTABLISHED, which live on as any
// connection opened inside a window does. A UDP flow has no such state to ask, so it always goes.
import type { BpfMap } from '../bpf/libbpf.js';
import { addrFrom16, addrTo16 } from '../wire/address.js';
import { decodeFlowKey } from '../wire/layout.js';
import { allTcpSockets, TCP_ESTABLISHED } from './seed.js';

const IPPROTO_UDP = 17;

/** The ESTABLISHED TCP connections of this network namespace (seed.ts reads the tables), as "remote port local port". */
export function establishedTcp(files?: readonly string[]): Set<string> {
  return new Set(allTcpSockets(files).filter((s) => s.state === TCP_ESTABLISHED)
    .map((s) => `${s.remoteAddr} ${s.remotePort} ${s.localAddr} ${s.localPort}`));
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
