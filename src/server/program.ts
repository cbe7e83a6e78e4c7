// One loaded instance of server.bpf.o: opened, its tables sized, the given maps shared, loaded,
// and its configuration maps written from a Checked configuration. It attaches nothing: the
// lifecycle of an interface (server.ts) attaches or swaps it in; tests and benchmarks run it
// with BPF_PROG_TEST_RUN.
import { openAndLoad, openAndLoadSync, type BpfMap, type BpfObject, type BpfProgram } from '../bpf/libbpf.js';
import { writeTimeConfig } from '../bpf/clock.js';
import { readCounters } from '../bpf/counters.js';
import { objectPath } from '../bpf/object-files.js';
import { SERVER_REASON_NAMES, type ServerReason } from '../wire/reasons.js';
import { writeAlwaysAllow } from './allowlist.js';
import { DestCounterIndex, readDestinationCounters, zeroDestCounters, type DestinationCounters } from './destcounters.js';
import { DESTINATION_MAPS, writeDestinations } from './destinations.js';
import { KNOCK_MAPS, writeKnockMaps } from './knockmaps.js';
import { capacities, mapSet, type MapSet, type ServerMapName } from './maps.js';
import { SERVER_PROGRAMS, type Checked, type Enforcement, type ProgramCapacities, type ProgramConfig } from './options.js';

export class ServerProgram {
  readonly enforcement: Enforcement;
  #obj: BpfObject;
  #config: Checked<ProgramConfig> | null = null;
  #counterIdx: number[] = [];

  private constructor(obj: BpfObject, enforcement: Enforcement) {
    this.#obj = obj;
    this.enforcement = enforcement;
  }

  /**
   * Opens server.bpf.o, sizes its tables, makes it use the maps in `reuse` (shared with a running
   * instance) and loads it; a load a signal interrupted is tried again (openAndLoad). Its
   * configuration maps are empty until configure().
   */
  static load(o: ProgramCapacities & { enforcement?: Enforcement | undefined }, reuse: Partial<Record<ServerMapName, BpfMap>> = {}): ServerProgram {
    return new ServerProgram(openAndLoadSync(objectPath('server'), prepare(o, reuse)), o.enforcement ?? 'xdp');
  }

  /** load() with the verifier on a worker thread: the event loop keeps serving meanwhile (a reload). */
  static async loadAsync(o: ProgramCapacities & { enforcement?: Enforcement | undefined }, reuse: Partial<Record<ServerMapName, BpfMap>> = {}): Promise<ServerProgram> {
    return new ServerProgram(await openAndLoad(objectPath('server'), prepare(o, reuse)), o.enforcement ?? 'xdp');
  }

  /** The program of this instance's enforcement mode (spak_server or spak_server_tc). */
  get program(): BpfProgram {
    return this.#obj.program(SERVER_PROGRAMS[this.enforcement]);
  }

  map(name: ServerMapName): BpfMap {
    return this.#obj.map(name);
  }

  maps<N extends ServerMapName>(names: readonly N[]): MapSet<N> {
    return mapSet(names, (n) => this.map(n));
  }

  /**
   * Writes every configuration map from `c`. `counters` assigns the destinations their counter
   * slots: the lifecycle keeps one for the daemon's life, so a destination kept across a reload
   * keeps its counts, and a slot given out afresh is zeroed first.
   */
  configure(c: Checked<ProgramConfig>, counters: DestCounterIndex): void {
    writeTimeConfig(this.map('spak_config'), c);
    const { indexes, fresh } = counters.assign(c.protect);
    for (const idx of fresh) zeroDestCounters(this.map('spak_dest_counters'), idx);
    const lists = c.knock !== undefined || (c.alwaysAllow?.length ?? 0) > 0;
    writeDestinations(this.maps(DESTINATION_MAPS), c.protect, c.keys, lists, indexes);
    writeKnockMaps(this.maps(KNOCK_MAPS), c.knock);
    writeAlwaysAllow(this.map('spak_always'), c.alwaysAllow ?? []);
    this.#config = c;
    this.#counterIdx = indexes;
  }

  /** Rewrites only the knock maps, from `c`: the last configuration with another knock (the clients changed). */
  writeKnock(c: Checked<ProgramConfig>): void {
    writeKnockMaps(this.maps(KNOCK_MAPS), c.knock);
    this.#config = c;
  }

  /** Verdict counters summed over CPUs. */
  counters(): Record<ServerReason, bigint> {
    return readCounters(this.map('spak_server_counters'), SERVER_REASON_NAMES);
  }

  /**
   * Per protected destination (as last configured: address, port, protocol), the counts of its
   * new-connection decisions by outcome (admit_tag, refuse_tag, ...), summed over CPUs.
   */
  destinationCounters(): DestinationCounters[] {
    return readDestinationCounters(this.map('spak_dest_counters'), this.#config?.protect ?? [], this.#counterIdx);
  }

  close(): void {
    this.#obj.close();
  }
}

/** Before a load: the tables sized, the shared maps reused. */
function prepare(o: ProgramCapacities, reuse: Partial<Record<ServerMapName, BpfMap>>): (obj: BpfObject) => void {
  return (obj) => {
    for (const [name, n] of Object.entries(capacities(o))) obj.setMaxEntries(name, n);
    for (const [name, map] of Object.entries(reuse)) obj.reuseMap(name, map);
  };
}
