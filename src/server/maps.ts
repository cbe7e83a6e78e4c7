// Every map of server.bpf.o, named once. Adoption, reload, pinning, the writers' map sets and
// `spak status` all read their lists from here; test/bpf/maps.test.ts holds it against the
// compiled object, so a map added to the C side and forgotten here fails a test.
import type { BpfMap } from '../bpf/libbpf.js';
import { SPAK_DEFAULT_ALLOW_CAPACITY, SPAK_DEFAULT_FLOW_CAPACITY, SPAK_DEFAULT_REPLAY_CAPACITY } from '../wire/layout.js';

/**
 * config: rewritten by each daemon from its options and swapped in with its program.
 * state: what the program learned or was granted; kept across daemons (adopted from the pins).
 */
export type MapRole = 'config' | 'state';

/**
 * Who writes the map from user space ('program': only server.bpf.c itself, user space at most
 * reads, seeds or sweeps it).
 */
export type MapWriter = 'bpf/clock.ts' | 'server/destinations.ts' | 'server/knockmaps.ts' | 'server/allowlist.ts' | 'server/destcounters.ts'
  | 'server/knocknonces.ts' | 'program';

/** The server options that size a table. */
export type CapacityOption = 'flowCapacity' | 'replayCapacity' | 'allowCapacity';

export interface MapSpec {
  role: MapRole;
  writer: MapWriter;
  /** Pinned in the interface's pin directory: the next daemon adopts it, `spak status` reads it. */
  pinned: boolean;
  /** Sized from this option (default when absent) before load. */
  capacity?: { option: CapacityOption; default: number };
  /** A config map one daemon keeps across its own reloads (its indexes are the daemon's). */
  keptOnReload?: boolean;
  /** Its fill is reported (metrics, `spak status`) under this name. */
  table?: 'flows' | 'replay' | 'allowlist';
  /** The privilege drop leaves its pin root's: only the daemon, through the fd it holds, writes it. */
  rootOwnedPin?: boolean;
}

export const SERVER_MAPS = {
  spak_config: { role: 'config', writer: 'bpf/clock.ts', pinned: true },
  spak_ports: { role: 'config', writer: 'server/destinations.ts', pinned: true },
  spak_port_slots: { role: 'config', writer: 'server/destinations.ts', pinned: true },
  spak_protected: { role: 'config', writer: 'server/destinations.ts', pinned: true },
  spak_dests: { role: 'config', writer: 'server/destinations.ts', pinned: true },
  spak_protected_addrs: { role: 'config', writer: 'server/destinations.ts', pinned: true },
  spak_udp_ports: { role: 'config', writer: 'server/destinations.ts', pinned: true },
  spak_udp_protected: { role: 'config', writer: 'server/destinations.ts', pinned: true },
  spak_knock_config: { role: 'config', writer: 'server/knockmaps.ts', pinned: true },
  spak_knock_clients: { role: 'config', writer: 'server/knockmaps.ts', pinned: true },
  spak_always: { role: 'config', writer: 'server/allowlist.ts', pinned: true },
  // Config, not state: its indexes are one daemon's assignment (destcounters.ts), so a new daemon counts afresh.
  spak_dest_counters: { role: 'config', writer: 'server/destcounters.ts', pinned: true, keptOnReload: true },
  spak_flows: {
    role: 'state', writer: 'program', pinned: true, table: 'flows',
    capacity: { option: 'flowCapacity', default: SPAK_DEFAULT_FLOW_CAPACITY },
  },
  spak_replay: {
    role: 'state', writer: 'program', pinned: true, table: 'replay',
    capacity: { option: 'replayCapacity', default: SPAK_DEFAULT_REPLAY_CAPACITY },
  },
  // State so that a restart does not hand a flooding source a fresh burst.
  spak_knock_rate: { role: 'state', writer: 'program', pinned: true },
  // Per client id, the budget of knocks that passed the prefilter; state for the same reason.
  spak_knock_client_rate: { role: 'state', writer: 'program', pinned: true },
  // Tags of accepted knocks (the knock service marks them through knockmaps.ts): a restart keeps dropping their repeats.
  spak_knock_accepted: { role: 'state', writer: 'server/knockmaps.ts', pinned: true },
  // What knocks opened (the knock service writes it through allowlist.ts).
  spak_allow: {
    role: 'state', writer: 'server/allowlist.ts', pinned: true, table: 'allowlist',
    capacity: { option: 'allowCapacity', default: SPAK_DEFAULT_ALLOW_CAPACITY },
  },
  spak_server_counters: { role: 'state', writer: 'program', pinned: true },
  // The knock replay memory (no program reads it): pinned, it outlives every daemon, and only root can touch it.
  spak_knock_nonces: {
    role: 'state', writer: 'server/knocknonces.ts', pinned: true, rootOwnedPin: true,
    capacity: { option: 'replayCapacity', default: SPAK_DEFAULT_REPLAY_CAPACITY },
  },
} as const satisfies Record<string, MapSpec>;

export type ServerMapName = keyof typeof SERVER_MAPS;
type Spec<N extends ServerMapName> = (typeof SERVER_MAPS)[N];

const ALL = Object.keys(SERVER_MAPS) as ServerMapName[];
const where = <N extends ServerMapName>(pred: (s: MapSpec) => boolean) => ALL.filter((n) => pred(SERVER_MAPS[n])) as N[];

export const SERVER_MAP_NAMES: readonly ServerMapName[] = ALL;
export const STATE_MAPS: readonly ServerMapName[] = where((s) => s.role === 'state');
export const PINNED_MAPS: readonly ServerMapName[] = where((s) => s.pinned);
/** Pins the privilege drop does not hand to the daemon's user. */
export const ROOT_OWNED_PINS: readonly ServerMapName[] = where((s) => s.rootOwnedPin === true);
/** What a reload shares with the running program: the state, and what this daemon keeps across its reloads. */
export const RELOAD_SHARED_MAPS: readonly ServerMapName[] = where((s) => s.role === 'state' || s.keptOnReload === true);

/** Maps by name, typed: the set a writer is handed. */
export type MapSet<N extends ServerMapName> = { [K in N]: BpfMap };
export type WrittenBy<W extends MapWriter> = { [K in ServerMapName]: Spec<K>['writer'] extends W ? K : never }[ServerMapName];

export function writtenBy<W extends MapWriter>(writer: W): WrittenBy<W>[] {
  return where((s) => s.writer === writer);
}

/** The maps `names` from `get` (a loaded object's, or pinned ones), as a typed set. */
export function mapSet<N extends ServerMapName>(names: readonly N[], get: (name: N) => BpfMap): MapSet<N> {
  return Object.fromEntries(names.map((n) => [n, get(n)])) as MapSet<N>;
}

/** Table sizes from the options, by map name (defaults where an option is absent). */
export function capacities(o: Partial<Record<CapacityOption, number | undefined>>): Partial<Record<ServerMapName, number>> {
  const out: Partial<Record<ServerMapName, number>> = {};
  for (const n of ALL) {
    const c = (SERVER_MAPS[n] as MapSpec).capacity;
    if (c) out[n] = o[c.option] ?? c.default;
  }
  return out;
}

type TableOf<K extends ServerMapName> = Spec<K> extends { table: infer T extends string } ? T : never;
/** The tables whose fill the metrics and `spak status` report: table name -> map name. */
export type Tables = { [K in ServerMapName as TableOf<K>]: K };

export const TABLES = Object.fromEntries(
  ALL.flatMap((n) => {
    const t = (SERVER_MAPS[n] as MapSpec).table;
    return t ? [[t, n]] : [];
  }),
) as Tables;
