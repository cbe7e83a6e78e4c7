// Per-destination counters of new-connection decisions (spak_dest_counters, bpf/spak_destcount.h):
// a per-CPU array with SPAK_DOUT_MAX slots per destination, at counter index * SPAK_DOUT_MAX +
// outcome. The daemon assigns each protected destination (address, port, protocol) a counter index
// and writes it into the destination's entry (spak_dests.counter_idx for TCP, the value of
// spak_udp_protected for UDP). Indexes are stable while the daemon runs: a reconfiguration keeps
// the index of every destination it keeps, and a freed index is zeroed before it is reused.
import type { BpfMap } from '../bpf/libbpf.js';
import { SPAK_MAX_DESTS } from '../wire/layout.js';
import { DEST_OUTCOME_NAMES, SPAK_DOUT_MAX, type DestOutcome } from '../wire/reasons.js';
import { addrTo16 } from '../wire/address.js';
import { ALL_ADDRESSES, protocolOf, type ProtectedDest } from './destinations.js';

export interface DestinationCounters {
  /** As configured: an address, a family's all-zero address, or "*". */
  address: string;
  port: number;
  protocol: 'tcp' | 'udp';
  counts: Record<DestOutcome, bigint>;
}

/** What identifies a destination across reconfigurations: protocol, address (16 bytes or "*"), port. */
export function destinationId(d: ProtectedDest): string {
  const addr = d.address === ALL_ADDRESSES ? '*' : addrTo16(d.address).toString('hex');
  return `${protocolOf(d)}/${addr}/${d.port}`;
}

/** Counter indexes by destination, kept across reconfigurations of one loaded program. */
export class DestCounterIndex {
  #byId = new Map<string, number>();

  /**
   * Indexes for `protect`, in its order: the same one for a destination seen before, the lowest
   * free one for a new destination. `fresh` lists the indexes newly given out: their counters
   * still hold a removed destination's counts (or nothing) and must be zeroed.
   */
  assign(protect: ProtectedDest[]): { indexes: number[]; fresh: number[] } {
    const ids = protect.map(destinationId);
    const keep = new Set(ids);
    for (const id of [...this.#byId.keys()]) if (!keep.has(id)) this.#byId.delete(id);
    const used = new Set(this.#byId.values());
    const fresh: number[] = [];
    let next = 0;
    const indexes = ids.map((id) => {
      const known = this.#byId.get(id);
      if (known !== undefined) return known;
      while (used.has(next)) next++;
      if (next >= SPAK_MAX_DESTS) throw new Error(`more than ${SPAK_MAX_DESTS} destinations to count`);
      used.add(next);
      this.#byId.set(id, next);
      fresh.push(next);
      return next;
    });
    return { indexes, fresh };
  }
}

function slotKey(idx: number, outcome: number): Buffer {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(idx * SPAK_DOUT_MAX + outcome);
  return k;
}

/** Zeroes every outcome of one counter index, on every CPU. */
export function zeroDestCounters(map: BpfMap, idx: number): void {
  const zero = Buffer.alloc(map.fullValueSize);
  for (let o = 0; o < SPAK_DOUT_MAX; o++) map.update(slotKey(idx, o), zero);
}

/** The counts of one counter index, summed over CPUs. */
export function readDestCounts(map: BpfMap, idx: number): Record<DestOutcome, bigint> {
  const out = {} as Record<DestOutcome, bigint>;
  DEST_OUTCOME_NAMES.forEach((name, o) => {
    let sum = 0n;
    for (const cpu of map.lookupPerCpu(slotKey(idx, o))) sum += cpu.readBigUInt64LE(0);
    out[name] = sum;
  });
  return out;
}

/** Every destination's counts, in the order of `protect` (indexes from DestCounterIndex.assign). */
export function readDestinationCounters(map: BpfMap, protect: ProtectedDest[], indexes: number[]): DestinationCounters[] {
  return protect.map((d, i) => ({ address: d.address, port: d.port, protocol: protocolOf(d), counts: readDestCounts(map, indexes[i]!) }));
}
