// Sizes of the server's tables, read from the kernel when asked (never cached).
import type { BpfMap } from '../bpf/libbpf.js';
import { TABLES, type Tables } from '../server/maps.js';

/** The tables whose fill the metrics and `spak status` report, by map name (server/maps.ts says which). */
export { TABLES };
export type TableName = keyof Tables;

/** Entries in a hash map now (batch lookups, the way the sweep reads them). */
export function countEntries(map: BpfMap): number {
  let n = 0;
  for (const c of map.lookupChunks()) n += c.count;
  return n;
}

export interface TableFill { entries: number; capacity: number }

export function tableFill(map: BpfMap): TableFill {
  return { entries: countEntries(map), capacity: map.maxEntries };
}
