// The lifecycle of one protected interface: the SYN-mode server program (program.ts) attached at
// XDP or at TC ingress (through a tcx link) as a pinned bpf_link, so that protection outlives the daemon.
// A new daemon adopts what an earlier one (stopped, crashed or older) left pinned: it keeps the
// state maps (server/maps.ts says which), writes fresh configuration maps and swaps the program in
// atomically, switching the hook if the enforcement mode changed. Reload and knock client changes
// come through here too. The port is never open in between.
import { closeSync, constants, openSync, renameSync } from 'node:fs';
import {
  BpfLink, type BpfMap, type BpfProgram, ensureBpffs, ifIndex, linkKind, type LinkInfo, mkdirPins, readLockHolder, removePins, tryLock,
} from '../bpf/libbpf.js';
import { keepClockCurrent, monotonicSeconds } from '../bpf/clock.js';
import { objectPath } from '../bpf/object-files.js';
import type { ServerReason } from '../wire/reasons.js';
import type { KnockMapOptions } from './knockmaps.js';
import { DestCounterIndex, type DestinationCounters } from './destcounters.js';
import { openPinnedState, copyPinnedState, type PinnedState } from './adoption.js';
import { adoptLegacyPins, DEFAULT_BPFFS, openPinnedLink, pinPaths, removePin, stagedLinkPin, type PinPaths } from '../bpf/pins.js';
import { capacities, PINNED_MAPS, RELOAD_SHARED_MAPS, SERVER_MAPS, STATE_MAPS, type ServerMapName } from './maps.js';
import {
  checkConfig, sweepIntervalSeconds, withConfig, withKnock, type Checked, type Enforcement, type ReloadableOptions, type ServerOptions,
} from './options.js';
import { ServerProgram } from './program.js';
import { removeServer } from './remove.js';
import { seedFlows } from './seed.js';
import { sweepTables, type SweepResult } from './sweep.js';

export type { ProtectedDest, ServerKey } from './destinations.js';
export type { KnockMapOptions } from './knockmaps.js';
export type { DestinationCounters } from './destcounters.js';
export type { ServerMapName } from './maps.js';
export {
  checkConfig, ENFORCEMENTS, SERVER_PROGRAMS, sweepIntervalSeconds,
  type Checked, type Enforcement, type ProgramConfig, type ReloadableOptions, type ServerOptions,
} from './options.js';
export { ServerProgram } from './program.js';

export interface StartedServer {
  ifname: string;
  ifindex: number;
  enforcement: Enforcement;
  /** The XDP mode, or 'tc' at TC ingress. */
  mode: 'native' | 'generic' | 'tc';
  /**
   * Set when an earlier daemon's pinned program was replaced; switchedFrom when that one ran in the other
   * mode (the new link was attached before the old one was detached).
   */
  adopted: { oldProgId: number; newProgId: number; switchedFrom?: Enforcement } | null;
  seededFlows: number;
  pinDir: string;
}

export interface ReloadHow {
  /**
   * Load on the main thread (blocking it while the verifier runs): after a privilege drop only the
   * main thread holds CAP_BPF and CAP_PERFMON, and a worker thread's BPF_PROG_LOAD would be refused.
   */
  onMainThread?: boolean | undefined;
}

export class SpakServer {
  #opts: Checked<ServerOptions>;
  #program: ServerProgram | null = null;
  #link: BpfLink | null = null;
  #lock: { release(): void } | null = null;
  #timers: NodeJS.Timeout[] = [];
  #adoptedMaps: BpfMap[] = [];
  #paths: PinPaths | null = null;
  /** This daemon attached the link (rather than adopting one an earlier daemon left). */
  #attachedHere = false;
  #pinDirFd: number | null = null;
  /** Kept for the daemon's life: a destination keeps its counter slot across reloads. */
  #counterIndex = new DestCounterIndex();
  /** Moves on at every stop: a reload whose load ran across one drops what it loaded. */
  #epoch = 0;

  constructor(opts: ServerOptions | Checked<ServerOptions>) {
    this.#opts = checkConfig(opts);
  }

  get enforcement(): Enforcement {
    return this.#opts.enforcement ?? 'xdp';
  }

  /** The options in force (the daemon restores them when a reload of several interfaces fails halfway). */
  get options(): Checked<ServerOptions> {
    return this.#opts;
  }

  /**
   * Serves the interface: adopts the pinned program of an earlier daemon, or attaches a new
   * one. Refuses while another daemon serves it. On failure, what this call made is undone
   * and what an earlier daemon left in force stays in force.
   */
  start(): StartedServer {
    const o = this.#opts;
    const ifindex = ifIndex(o.iface);
    objectPath('server'); // an unbuilt checkout says so before anything else happens
    const paths = pinPaths(o.iface, 'server', o.bpffs ?? DEFAULT_BPFFS);
    ensureBpffs(o.bpffs ?? DEFAULT_BPFFS);
    const moved = adoptLegacyPins(o.iface, ifindex, o.bpffs ?? DEFAULT_BPFFS, readLockHolder);
    if (moved) o.logger?.info({ event: 'pins-moved', iface: o.iface }, moved);
    const lock = tryLock(paths.lock);
    if (!lock.acquired) throw new Error(`a spak server already runs on ${o.iface} (pid ${lock.heldBy ?? 'unknown'})`);
    this.#lock = lock;
    try {
      // A mode switch interrupted between pinning the new link and moving it into place: that link
      // goes (the one pinned as "link" was still attached then, and is adopted below).
      removePin(stagedLinkPin(paths));
      const old = openPinnedLink(paths.link);
      const info = old?.info();
      let started: StartedServer;
      if (old && info && info.ifindex === ifindex && linkKind(info) !== null) {
        started = this.#adopt(paths, old, info, ifindex);
      } else {
        old?.close();
        // A link whose interface is gone (or another's) protects nothing: start afresh.
        removePins(paths.dir, o.bpffs ?? DEFAULT_BPFFS);
        started = this.#fresh(paths, ifindex);
        this.#attachedHere = true;
      }
      this.#paths = paths;
      this.#runTimers();
      return started;
    } catch (err) {
      this.#closeAll();
      throw err;
    }
  }

  #fresh(paths: PinPaths, ifindex: number): StartedServer {
    const o = this.#opts;
    const program = ServerProgram.load(o);
    this.#program = program;
    // Existing connections first, then the destinations, then the attach: there is no
    // moment where a connection that existed before protection is gated.
    let seeded = o.seedExisting ? seedFlows(this.map('spak_flows'), o.protect) : 0;
    program.configure(o, this.#counterIndex);
    const { link, mode } = this.#attach(program.program);
    this.#link = link;
    try {
      // Connections completed between the first scan and the attach: still before protection.
      if (o.seedExisting) seeded = Math.max(seeded, seedFlows(this.map('spak_flows'), o.protect));
      mkdirPins(paths.dir);
      for (const name of PINNED_MAPS) program.map(name).pin(paths.map(name));
      link.pin(paths.link);
    } catch (err) {
      // Not pinned: closing our fd detaches it. Nothing was protected before, nothing is lost.
      link.close();
      this.#link = null;
      removePins(paths.dir, o.bpffs ?? DEFAULT_BPFFS);
      throw err;
    }
    return { ifname: o.iface, ifindex, enforcement: this.enforcement, mode, adopted: null, seededFlows: seeded, pinDir: paths.dir };
  }

  /** A new link for prog on the interface: an XDP link, or a tcx link at TC ingress. */
  #attach(prog: BpfProgram): { link: BpfLink; mode: StartedServer['mode'] } {
    const o = this.#opts;
    if (this.enforcement === 'tc') return { link: BpfLink.createTcx(prog, o.iface), mode: 'tc' };
    return BpfLink.createXdp(prog, o.iface, o.xdpMode, (msg: string) => o.logger?.warn(msg));
  }

  #adopt(paths: PinPaths, old: BpfLink, oldInfo: LinkInfo, ifindex: number): StartedServer {
    const o = this.#opts;
    const oldProgId = oldInfo.progId;
    const oldKind = linkKind(oldInfo)!;
    this.#link = old;
    const state = openPinnedState(STATE_MAPS, (name) => paths.map(name), capacities(o), (msg) => o.logger?.warn(msg));
    this.#adoptedMaps.push(...state.opened);
    let mode: StartedServer['mode'] = 'native';
    const { newProgId } = this.#swapProgram(paths, state.reuse, state, (prog) => {
      if (oldKind === this.enforcement) {
        old.update(prog, oldProgId);
        mode = this.enforcement === 'tc' ? 'tc' : old.xdpMode() ?? (o.xdpMode === 'generic' ? 'generic' : 'native');
      } else {
        mode = this.#switchLink(paths, old, prog);
      }
    });
    const adopted = { oldProgId, newProgId, ...(oldKind === this.enforcement ? {} : { switchedFrom: oldKind }) };
    return { ifname: o.iface, ifindex, enforcement: this.enforcement, mode, adopted, seededFlows: 0, pinDir: paths.dir };
  }

  /**
   * Loads a fresh program instance whose maps in `reuse` are shared with the running
   * program and whose configuration maps hold this.#opts, copies the tables `carry` says, and swaps
   * it in with `swapIn` (bpf_link_update + BPF_F_REPLACE against the old program, or a new link
   * of the other kind attached before the old one goes): a packet sees the old program with the
   * old configuration or the new one with the new, never a mix. Then re-pins the maps that are
   * new. Adoption and reload both come through here (a reload with the instance it loaded already).
   */
  #swapProgram(
    paths: PinPaths, reuse: Partial<Record<ServerMapName, BpfMap>>,
    carry: PinnedState<ServerMapName> | null, swapIn: (prog: BpfProgram) => void,
    loaded?: ServerProgram,
  ): { newProgId: number } {
    const program = loaded ?? ServerProgram.load(this.#opts, reuse);
    this.#program = program;
    program.configure(this.#opts, this.#counterIndex);
    const target = (name: ServerMapName) => program.map(name);
    if (carry) copyPinnedState(carry, target);
    const prog = program.program;
    const newProgId = prog.id;
    swapIn(prog);
    if (carry) copyPinnedState(carry, target); // entries the old program added while we copied
    for (const name of PINNED_MAPS) {
      if (reuse[name]) continue;
      try {
        removePin(paths.map(name));
        program.map(name).pin(paths.map(name));
      } catch (err) {
        // A state table the next daemon must find: the failure is the caller's. A configuration
        // map only misleads readers of the pins (the next daemon writes fresh ones anyway), and
        // the new program is in force already: say so and go on.
        if (SERVER_MAPS[name].role === 'state') throw err;
        this.#opts.logger?.warn(`re-pinning ${name} failed: ${(err as Error).message}`);
      }
    }
    return { newProgId };
  }

  /**
   * Reload: the running program is replaced by a fresh instance configured with `update`
   * (keys, destinations, timing, knock clients, always-allow), sharing every state map with it
   * (flows, replay, knock rates, allowlist, counters), so no established connection is lost
   * and no tag can be replayed. `update` was checked (checkConfig) before anything changes; on
   * failure the old program and configuration stay in force. Capacities, the XDP mode and the
   * interface are fixed for the daemon's life (a restart changes them).
   */
  async reload(update: Checked<ReloadableOptions>, how: ReloadHow = {}): Promise<{ oldProgId: number; newProgId: number }> {
    const iface = this.#opts.iface;
    const old = this.#program;
    if (!old || !this.#link || !this.#paths) throw new Error(`the server on ${iface} is not running`);
    // The state goes on, and so do this daemon's per-destination counters: the same destination
    // keeps its index (DestCounterIndex), a new one gets a zeroed slot.
    const reuse: Partial<Record<ServerMapName, BpfMap>> = {};
    for (const name of RELOAD_SHARED_MAPS) reuse[name] = old.map(name);
    // The verifier runs on a worker thread: knocks and signals are served meanwhile, and a stop
    // may come. What was loaded for a server that stopped (or swapped meanwhile) goes unused.
    const epoch = this.#epoch;
    const capacitiesOf = withConfig(this.#opts, update);
    const loaded = how.onMainThread ? ServerProgram.load(capacitiesOf, reuse) : await ServerProgram.loadAsync(capacitiesOf, reuse);
    const link = this.#link as BpfLink | null;
    const paths = this.#paths as PinPaths | null;
    if (epoch !== this.#epoch || this.#program !== old || !link || !paths) {
      loaded.close();
      throw new Error(`the server on ${iface} stopped during the reload`);
    }
    const prevOpts = this.#opts;
    // The running instance's program fd, not its id: after a privilege drop an id lookup is refused.
    const oldProg = old.program;
    const oldProgId = oldProg.id;
    this.#opts = withConfig(prevOpts, update);
    this.#program = null;
    let newProgId: number;
    try {
      ({ newProgId } = this.#swapProgram(paths, reuse, null, (prog) => link.update(prog, oldProg), loaded));
    } catch (err) {
      // Nothing after link.update throws (re-pinning only warns), so the swap did not happen:
      // the old instance stays in force with the old configuration.
      loaded.close();
      this.#program = old;
      this.#opts = prevOpts;
      throw err;
    }
    old.close();
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.#runTimers(); // the clock refresh writes the new spak_config
    return { oldProgId, newProgId };
  }

  /**
   * The knock clients changed: checks `knock`, keeps it in the options (a later reload or swap
   * writes the same) and writes the running instance's knock maps (server/knockmaps.ts).
   */
  setKnock(knock: KnockMapOptions | undefined): void {
    const next = withKnock(this.#opts, knock);
    this.#program?.writeKnock(next);
    this.#opts = next;
  }

  /**
   * The pinned link is of the other kind (the enforcement mode went from XDP to TC ingress or back): the new link
   * is attached and pinned in its place before the old one is detached, so both run for a moment and
   * the port is never open. Fails with the old link still attached and pinned.
   */
  #switchLink(paths: PinPaths, old: BpfLink, prog: BpfProgram): StartedServer['mode'] {
    const { link, mode } = this.#attach(prog);
    const staged = stagedLinkPin(paths);
    try {
      removePin(staged);
      link.pin(staged);
      renameSync(staged, paths.link); // atomic on bpffs: the pin never names no link
    } catch (err) {
      removePin(staged);
      link.close(); // unpinned: closing our fd detaches it; the old link stays in force
      throw err;
    }
    this.#link = link;
    old.detach();
    old.close();
    return mode;
  }

  /** A map of the running program instance (the knock service and the metrics read them). */
  map(name: ServerMapName): BpfMap {
    return this.#running().map(name);
  }

  /**
   * The daemon goes; protection stays. Closes this process's handles only: the pinned link
   * keeps the program attached with its maps, and the next daemon adopts them.
   */
  stop(): void {
    this.#closeAll();
  }

  /**
   * Undoes start() when a daemon serving several interfaces cannot start them all: a link this
   * daemon attached is detached and its pins removed; an adopted one stays in force (as after
   * SIGTERM), with the configuration this daemon swapped in.
   */
  abandon(): void {
    const paths = this.#paths;
    if (this.#attachedHere && this.#link && paths) {
      try {
        this.#link.detach();
      } finally {
        this.#closeAll();
        removePins(paths.dir, this.#opts.bpffs ?? DEFAULT_BPFFS);
      }
      return;
    }
    this.#closeAll();
  }

  /**
   * Before a privilege drop: from now on the pin directory is reached through an fd held open
   * (/proc/self/fd/N/NAME), so that re-pinning on reload needs no search permission on bpffs's
   * root-only ancestors (/sys/fs/bpf is 0700), only write permission on the directory itself.
   */
  keepPinDirOpen(): void {
    const p = this.#paths;
    if (!p || this.#pinDirFd !== null) return;
    const fd = openSync(p.dir, constants.O_RDONLY | constants.O_DIRECTORY);
    this.#pinDirFd = fd;
    this.#paths = { ...p, map: (name) => `/proc/self/fd/${fd}/${name}` };
  }

  /** The pin directory of a started server (the daemon hands it to the unprivileged user). */
  get pinDir(): string | null {
    return this.#paths?.dir ?? null;
  }

  #closeAll(): void {
    this.#epoch++;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.#link?.close();
    this.#link = null;
    for (const m of this.#adoptedMaps) m.close();
    this.#adoptedMaps = [];
    this.#program?.close();
    this.#program = null;
    this.#lock?.release();
    this.#lock = null;
    this.#paths = null;
    this.#attachedHere = false;
    if (this.#pinDirFd !== null) closeSync(this.#pinDirFd);
    this.#pinDirFd = null;
  }

  /** Verdict counters summed over CPUs. */
  counters(): Record<ServerReason, bigint> {
    return this.#running().counters();
  }

  /** Per protected destination, the counts of its new-connection decisions by outcome (ServerProgram). */
  destinationCounters(): DestinationCounters[] {
    return this.#running().destinationCounters();
  }

  #running(): ServerProgram {
    if (!this.#program) throw new Error(`the server on ${this.#opts.iface} is not running`);
    return this.#program;
  }

  /** One sweep of the flow, replay and allowlist tables (the daemon runs it every sweepIntervalSeconds). */
  sweep(nowS = monotonicSeconds()): SweepResult {
    return sweepTables(this.#running().maps(['spak_flows', 'spak_replay', 'spak_allow']), this.#opts, nowS);
  }

  #runTimers(): void {
    const o = this.#opts;
    this.#timers.push(keepClockCurrent(this.map('spak_config'), o, (err) => o.logger?.error({ err }, 'clock refresh failed')));
    const sweep = setInterval(() => {
      try {
        const r = this.sweep();
        o.logger?.debug({ iface: o.iface, ...r }, 'sweep');
      } catch (err) {
        o.logger?.error({ err }, 'sweep failed');
      }
    }, sweepIntervalSeconds(o) * 1000);
    sweep.unref();
    this.#timers.push(sweep);
  }

  /**
   * `spak server stop IFACE`: the one explicit way to remove protection. Stops a daemon that
   * still serves the interface, detaches the link, removes every pin. Returns what it did.
   */
  static remove(iface: string, bpffs = DEFAULT_BPFFS): string[] {
    return removeServer(iface, bpffs);
  }
}
