// Per-CPU verdict counters: one u64 per CPU per reason, summed for display.
import type { BpfMap } from './libbpf.js';

/** Sums a per-CPU array of u64 counters; names[i] is the reason of index i. */
export function readCounters<N extends string>(map: BpfMap, names: readonly N[]): Record<N, bigint> {
  const out = {} as Record<N, bigint>;
  names.forEach((name, i) => {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(i);
    let sum = 0n;
    for (const cpu of map.lookupPerCpu(key)) sum += cpu.readBigUInt64LE(0);
    out[name] = sum;
  });
  return out;
}

/** "name value" lines of the non-zero counters (all of them with all=true), aligned. */
export function formatCounters(counters: Record<string, bigint>, all = false): string {
  const rows = Object.entries(counters).filter(([, v]) => all || v !== 0n);
  if (rows.length === 0) return '  (no packets counted)';
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n');
}
