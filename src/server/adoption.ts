// What a new daemon takes over from the state tables an earlier daemon left pinned. A table of
// the same shape is shared with the running program (nothing is copied, nothing is lost); one
// of another capacity is copied into the new program's table, before the swap and once more
// after it (for what the old program added meanwhile); a flow table from before flow keys had a
// protocol is copied with its keys widened. Anything else starts empty, with a warning.
import { BpfMap, BpfObject } from '../bpf/libbpf.js';
import { objectPath } from '../bpf/object-files.js';
import { IPPROTO_TCP } from '../wire/layout.js';

export interface PinnedState<N extends string> {
  /** Same type, key, value and capacity: shared with the running program. */
  reuse: Partial<Record<N, BpfMap>>;
  /** Same key and value, another capacity: copied. */
  copy: [N, BpfMap][];
  /** spak_flows with 36-byte keys (no protocol yet): copied with widened keys. */
  widenFlows: BpfMap | null;
  /** Every pinned map opened here; the caller closes them when it goes. */
  opened: BpfMap[];
}

/** spak_flow_key before it had a protocol (36 bytes): every flow was TCP. */
const OLD_FLOW_KEY_SIZE = 36;

/**
 * Opens the pinned state tables `names` (a missing pin, e.g. after an interrupted first start, is
 * skipped: that table starts empty) and decides for each how the new program takes it over,
 * against server.bpf.o's own definitions with the capacities in `want`.
 */
export function openPinnedState<N extends string>(
  names: readonly N[], pinOf: (name: N) => string, want: Partial<Record<string, number>>, warn: (msg: string) => void,
): PinnedState<N> {
  const state: PinnedState<N> = { reuse: {}, copy: [], widenFlows: null, opened: [] };
  for (const name of names) {
    let pinned: BpfMap;
    try {
      pinned = BpfMap.openPinned(pinOf(name));
    } catch {
      continue;
    }
    state.opened.push(pinned);
    const probe = BpfObject.open(objectPath('server'));
    try {
      const capacity = want[name];
      if (capacity !== undefined) probe.setMaxEntries(name, capacity);
      const def = probe.map(name);
      const sameEntries = def.keySize === pinned.keySize && def.valueSize === pinned.valueSize;
      if (sameEntries && def.type === pinned.type && def.maxEntries === pinned.maxEntries) state.reuse[name] = pinned;
      else if (sameEntries) state.copy.push([name, pinned]);
      else if (name === 'spak_flows' && pinned.keySize === OLD_FLOW_KEY_SIZE && def.valueSize === pinned.valueSize) state.widenFlows = pinned;
      else warn(`pinned ${name} has another layout (an older spak): starting it empty`);
    } finally {
      probe.close();
    }
  }
  return state;
}

/** Copies the tables that are not shared into the new program's (`target` names them). */
export function copyPinnedState<N extends string>(state: PinnedState<N>, target: (name: N) => BpfMap): void {
  for (const [name, from] of state.copy) copyEntries(from, target(name));
  // widenFlows is only ever the pinned spak_flows, one of the names given to openPinnedState
  if (state.widenFlows) copyEntries(state.widenFlows, target('spak_flows' as N), widenFlowKey);
}

function widenFlowKey(k: Buffer): Buffer {
  return Buffer.concat([k, Buffer.from([IPPROTO_TCP, 0, 0, 0])]);
}

/** Copies every entry of one map into another of the same value size (keys through mapKey). */
function copyEntries(from: BpfMap, to: BpfMap, mapKey: (k: Buffer) => Buffer = (k) => k): void {
  const { keys, values } = from.lookupBatch();
  try {
    if (keys.length > 0) to.updateBatch(keys.map(mapKey), values, 'any');
  } catch {
    // the new table is smaller and full: what fits is kept
  }
}
