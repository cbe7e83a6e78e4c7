// The SYN-mode server daemon: loads server.bpf.o, writes its configuration maps, and
// attaches it at XDP (or TC ingress, through tcx) as a pinned bpf_link, so that protection outlives the daemon.
// A new daemon adopts what an earlier one (stopped, crashed or older) left pinned: it
// keeps the state maps (flows, replay, knock rates, allowlist, counters), writes fresh configuration maps and
// swaps the program in atomically. The port is never open in between.
import { closeSync, constants, openSync, renameSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  BpfLink,
  BpfMap,
  BpfObject,
  type BpfProgram,
  linkKind,
  type LinkInfo,
  ensureBpffs,
  ifIndex,
  mkdirPins,
  removePins,
  tryLock,
  type XdpMode,
} from '../bpf/libbpf.js';
import { keepClockCurrent, monotonicNs, monotonicSeconds, writeTimeConfig } from '../bpf/clock.js';
import { readCounters } from '../bpf/counters.js';
import { objectPath } from '../bpf/objects.js';
import { timeStepAt } from '../wire/option.js';
import {
  encodeFlow,
  encodeFlowKey,
  SERVER_REASON_NAMES,
  SPAK_DEFAULT_ALLOW_CAPACITY,
  SPAK_DEFAULT_FLOW_CAPACITY,
  SPAK_DEFAULT_REPLAY_CAPACITY,
  SPAK_FLOW_OPEN,
  SPAK_MAX_ALWAYS_ALLOW,
  type ServerReason,
} from '../wire/layout.js';
import { checkKnockMaps, writeKnockMaps, type KnockMapOptions } from './knockmaps.js';
import { sweepAllowlist, writeAlwaysAllow } from './allowlist.js';
import { parseCidr } from '../wire/address.js';
import { checkDestinations, writeDestinations, type ProtectedDest, type ServerKey } from './destinations.js';
import { DestCounterIndex, readDestinationCounters, zeroDestCounters, type DestinationCounters } from './destcounters.js';
import { openPinnedState, copyPinnedState, type PinnedState } from './adoption.js';
import { DEFAULT_BPFFS, openPinnedLink, pinPaths, removePin, stagedLinkPin, type PinPaths } from '../bpf/pins.js';
import { removeServer } from './remove.js';
import { coverage, liveTcpSockets } from './seed.js';
import { sweepFlows, sweepReplay, type SweepResult } from './sweep.js';

export type { ProtectedDest, ServerKey } from './destinations.js';
export type { KnockMapOptions } from './knockmaps.js';
export type { DestinationCounters } from './destcounters.js';

/** Where the server program runs: XDP (the default, cheapest), or TC ingress for interfaces or drivers where XDP cannot. */
export type Enforcement = 'xdp' | 'tc';
export const ENFORCEMENTS: readonly Enforcement[] = ['xdp', 'tc'];

/** The program of server.bpf.o for each enforcement mode. */
export const SERVER_PROGRAMS: Record<Enforcement, string> = { xdp: 'spak_server', tc: 'spak_server_tc' };

export interface ServerOptions {
  iface: string;
  /** Default 'xdp'. */
  enforcement?: Enforcement | undefined;
  /** XDP mode (enforcement 'xdp' only). */
  xdpMode: XdpMode;
  keys: ServerKey[];
  protect: ProtectedDest[];
  stepSeconds: number;
  stepWindow: number;
  /** An open flow idle this long whose socket is gone is removed. */
  flowIdleSeconds: number;
  /** A closing flow idle this long whose socket is gone is removed. */
  flowFinSeconds: number;
  replayCapacity?: number | undefined;
  flowCapacity?: number | undefined;
  /** Seed flows from the kernel's sockets at first start, so existing connections survive. */
  seedExisting: boolean;
  /** Knock mode: the XDP side of the knock port (port, clients, rate limit); off when absent. */
  knock?: KnockMapOptions | undefined;
  /** Sources every protected destination admits: IPv4/IPv6 addresses and CIDRs. */
  alwaysAllow?: string[] | undefined;
  /** Entries of the knock allowlist (spak_allow). */
  allowCapacity?: number | undefined;
  /** Drop SYNs to ports of protected addresses with no socket, instead of the kernel's RST (bpf/spak_stealth.h). */
  stealth?: boolean | undefined;
  /** The same for UDP datagrams, instead of the kernel's ICMP port unreachable. */
  stealthUdp?: boolean | undefined;
  /** Where bpffs is (mounted there when missing). */
  bpffs?: string | undefined;
  logger?: Logger | undefined;
}

/**
 * How often the daemon sweeps: no flow becomes removable sooner than the shorter of its two
 * grace periods, so sweeping more often than that finds nothing; 30 s at most, 5 s at least.
 * A sweep reads both whole tables (about 0.5 µs an entry on a slow VM), so 250,000 flows swept
 * every 30 s cost well under 1 % of a core. Tags wait for the sweep: see the README, Capacity.
 */
export function sweepIntervalSeconds(o: Pick<ServerOptions, 'flowFinSeconds' | 'flowIdleSeconds'>): number {
  return Math.min(30, Math.max(5, Math.min(o.flowFinSeconds, o.flowIdleSeconds)));
}
/**
 * Rewritten by each daemon and swapped in with its program. spak_dest_counters too: its
 * indexes are the daemon's own assignment (destcounters.ts), so a new daemon counts afresh.
 */
const CONFIG_MAPS = [
  'spak_config', 'spak_ports', 'spak_port_slots', 'spak_protected', 'spak_dests', 'spak_protected_addrs',
  'spak_knock_config', 'spak_knock_clients', 'spak_udp_ports', 'spak_udp_protected', 'spak_always', 'spak_dest_counters',
] as const;
/**
 * Kept across daemons: what the program learned (flows, tags seen, knock rates), what knocks
 * opened (the allowlist) and its counters. Knock rates are state so that a restart does not
 * hand a flooding source a fresh burst.
 */
const STATE_MAPS = ['spak_flows', 'spak_replay', 'spak_knock_rate', 'spak_allow', 'spak_server_counters'] as const;
export const SERVER_MAPS = [...CONFIG_MAPS, ...STATE_MAPS] as const;
export type ServerMapName = (typeof SERVER_MAPS)[number];

/** What a reload may change (see SpakServer.reload). */
export type ReloadableOptions = Pick<ServerOptions,
  'keys' | 'protect' | 'stepSeconds' | 'stepWindow' | 'flowIdleSeconds' | 'flowFinSeconds' | 'knock' | 'alwaysAllow' | 'seedExisting'
  | 'stealth' | 'stealthUdp'>;

export interface StartedServer {
  ifname: string;
  ifindex: number;
  enforcement: Enforcement;
  /** The XDP mode, or 'tc' for TC ingress. */
  mode: 'native' | 'generic' | 'tc';
  /**
   * Set when an earlier daemon's pinned program was replaced; switchedFrom when that one ran in the other
   * mode (the new link was attached before the old one was detached).
   */
  adopted: { oldProgId: number; newProgId: number; switchedFrom?: Enforcement } | null;
  seededFlows: number;
  pinDir: string;
}

export class SpakServer {
  #opts: ServerOptions;
  #obj: BpfObject | null = null;
  #link: BpfLink | null = null;
  #lock: { release(): void } | null = null;
  #timers: NodeJS.Timeout[] = [];
  #adoptedMaps: BpfMap[] = [];
  #paths: PinPaths | null = null;
  /** This daemon attached the link (rather than adopting one an earlier daemon left). */
  #attachedHere = false;
  #pinDirFd: number | null = null;
  #counterIndex = new DestCounterIndex();
  #counterIdx: number[] = [];

  constructor(opts: ServerOptions) {
    this.#opts = opts;
    checkDestinations(opts.protect, opts.keys);
    if (opts.knock) checkKnockMaps(opts.knock);
    checkAlwaysAllow(opts.alwaysAllow);
  }

  /**
   * Opens server.bpf.o, sizes the tables, reuses the given state maps, loads it and writes
   * the time config; attaches nothing. Tests and benchmarks run the program from here.
   */
  load(reuse: Partial<Record<ServerMapName, BpfMap>> = {}): BpfProgram {
    const o = this.#opts;
    const obj = BpfObject.open(objectPath('server'));
    this.#obj = obj;
    obj.setMaxEntries('spak_replay', o.replayCapacity ?? SPAK_DEFAULT_REPLAY_CAPACITY);
    obj.setMaxEntries('spak_flows', o.flowCapacity ?? SPAK_DEFAULT_FLOW_CAPACITY);
    obj.setMaxEntries('spak_allow', o.allowCapacity ?? SPAK_DEFAULT_ALLOW_CAPACITY);
    for (const [name, map] of Object.entries(reuse)) obj.reuseMap(name, map);
    obj.load();
    writeTimeConfig(obj.map('spak_config'), o);
    this.#writeKnock();
    writeAlwaysAllow(obj.map('spak_always'), o.alwaysAllow ?? []);
    return obj.program(SERVER_PROGRAMS[this.enforcement]);
  }

  get enforcement(): Enforcement {
    return this.#opts.enforcement ?? 'xdp';
  }

  /** Writes the protected destinations and their keys (no attach: for BPF_PROG_TEST_RUN). */
  protectWithoutAttaching(): void {
    const o = this.#opts;
    checkDestinations(o.protect, o.keys);
    const { indexes, fresh } = this.#counterIndex.assign(o.protect);
    for (const idx of fresh) zeroDestCounters(this.map('spak_dest_counters'), idx);
    this.#counterIdx = indexes;
    writeDestinations(this.#destinationMaps(), o.protect, o.keys, o.knock !== undefined || (o.alwaysAllow?.length ?? 0) > 0, indexes);
  }

  /** Rewrites the time config and the destinations of the loaded program with new settings. */
  configure(update: Partial<Pick<ServerOptions, 'protect' | 'keys' | 'stepSeconds' | 'stepWindow' | 'flowIdleSeconds' | 'flowFinSeconds' | 'knock' | 'alwaysAllow' | 'stealth' | 'stealthUdp'>>): void {
    const next = { ...this.#opts, ...update };
    checkDestinations(next.protect, next.keys);
    if (next.knock) checkKnockMaps(next.knock);
    checkAlwaysAllow(next.alwaysAllow);
    Object.assign(this.#opts, update);
    writeTimeConfig(this.map('spak_config'), this.#opts);
    this.protectWithoutAttaching();
    this.#writeKnock();
    writeAlwaysAllow(this.map('spak_always'), this.#opts.alwaysAllow ?? []);
  }

  #writeKnock(): void {
    writeKnockMaps({ spak_knock_config: this.map('spak_knock_config'), spak_knock_clients: this.map('spak_knock_clients') }, this.#opts.knock);
  }

  /** The knock clients changed (the knock service's directory): the knock maps follow at once. */
  setKnock(knock: KnockMapOptions | undefined): void {
    if (knock) checkKnockMaps(knock);
    this.#opts.knock = knock;
    if (this.#obj) this.#writeKnock();
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
    const prog = this.load();
    // Existing connections first, then the destinations, then the attach: there is no
    // moment where a connection that existed before protection is gated.
    let seeded = o.seedExisting ? this.#seedFlows() : 0;
    this.protectWithoutAttaching();
    const { link, mode } = this.#attach(prog);
    this.#link = link;
    try {
      // Connections completed between the first scan and the attach: still before protection.
      if (o.seedExisting) seeded = Math.max(seeded, this.#seedFlows());
      mkdirPins(paths.dir);
      for (const name of SERVER_MAPS) this.#obj!.map(name).pin(paths.map(name));
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

  /** A new link for prog on the interface, in this server's enforcement mode. */
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
    const want: Record<string, number> = {
      spak_flows: o.flowCapacity ?? SPAK_DEFAULT_FLOW_CAPACITY,
      spak_replay: o.replayCapacity ?? SPAK_DEFAULT_REPLAY_CAPACITY,
      spak_allow: o.allowCapacity ?? SPAK_DEFAULT_ALLOW_CAPACITY,
    };
    const state = openPinnedState(STATE_MAPS, (name) => paths.map(name), want, (msg) => o.logger?.warn(msg));
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
   * Loads a fresh program instance whose state maps are `reuse` (shared with the running
   * program) and whose configuration maps hold this.#opts, copies the tables `carry` says, and swaps
   * it in with `swapIn` (bpf_link_update + BPF_F_REPLACE against the old program, or a new link
   * of the other kind attached before the old one goes): a packet sees the old program with the
   * old configuration or the new one with the new, never a mix. Then re-pins the maps that are
   * new. Adoption and reload both come through here.
   */
  #swapProgram(
    paths: PinPaths, reuse: Partial<Record<ServerMapName, BpfMap>>,
    carry: PinnedState<ServerMapName> | null, swapIn: (prog: BpfProgram) => void,
  ): { newProgId: number } {
    const prog = this.load(reuse);
    this.protectWithoutAttaching();
    const target = (name: ServerMapName) => this.#obj!.map(name);
    if (carry) copyPinnedState(carry, target);
    const newProgId = prog.id;
    swapIn(prog);
    if (carry) copyPinnedState(carry, target); // entries the old program added while we copied
    for (const name of SERVER_MAPS) {
      if (reuse[name]) continue;
      try {
        removePin(paths.map(name));
        this.#obj!.map(name).pin(paths.map(name));
      } catch (err) {
        // A state table the next daemon must find: the failure is the caller's. A configuration
        // map only misleads readers of the pins (the next daemon writes fresh ones anyway), and
        // the new program is in force already: say so and go on.
        if ((STATE_MAPS as readonly string[]).includes(name)) throw err;
        this.#opts.logger?.warn(`re-pinning ${name} failed: ${(err as Error).message}`);
      }
    }
    return { newProgId };
  }

  /**
   * Reload: the running program is replaced by a fresh instance configured with `update`
   * (keys, destinations, timing, knock clients, always-allow), sharing every state map with it
   * (flows, replay, knock rates, allowlist, counters), so no established connection is lost
   * and no tag can be replayed. Everything is checked before anything changes; on failure the
   * old program and configuration stay in force. Capacities, the XDP mode and the interface
   * are fixed for the daemon's life (a restart changes them).
   */
  reload(update: ReloadableOptions): { oldProgId: number; newProgId: number } {
    const prevOpts = this.#opts;
    const next: ServerOptions = { ...prevOpts, ...update };
    checkDestinations(next.protect, next.keys);
    if (next.knock) checkKnockMaps(next.knock);
    checkAlwaysAllow(next.alwaysAllow);
    const oldObj = this.#obj;
    const link = this.#link;
    const paths = this.#paths;
    if (!oldObj || !link || !paths) throw new Error(`the server on ${prevOpts.iface} is not running`);
    // The running instance's program fd, not its id: after a privilege drop an id lookup is refused.
    const oldProg = oldObj.program(SERVER_PROGRAMS[this.enforcement]);
    const oldProgId = oldProg.id;
    const reuse: Partial<Record<ServerMapName, BpfMap>> = {};
    for (const name of STATE_MAPS) reuse[name] = oldObj.map(name);
    // This daemon's per-destination counters go on too: the same destination keeps its index
    // (DestCounterIndex), a new one gets a zeroed slot.
    reuse.spak_dest_counters = oldObj.map('spak_dest_counters');
    const prevCounterIdx = this.#counterIdx;
    this.#opts = next;
    this.#obj = null;
    let newProgId: number;
    try {
      ({ newProgId } = this.#swapProgram(paths, reuse, null, (prog) => link.update(prog, oldProg)));
    } catch (err) {
      // Nothing after link.update throws (re-pinning only warns), so the swap did not happen:
      // the old instance stays in force with the old configuration.
      (this.#obj as BpfObject | null)?.close(); // the instance load() made, if it got that far
      this.#obj = oldObj;
      this.#opts = prevOpts;
      this.#counterIdx = prevCounterIdx;
      throw err;
    }
    oldObj.close();
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.#runTimers(); // the clock refresh writes the new spak_config
    return { oldProgId, newProgId };
  }

  /**
   * The pinned link is of the other kind (the configuration went from XDP to TC or back): the new link
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

  /** A map of the loaded object, for tests and benchmarks. */
  map(name: ServerMapName): BpfMap {
    if (!this.#obj) throw new Error('server is not loaded');
    return this.#obj.map(name);
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
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.#link?.close();
    this.#link = null;
    for (const m of this.#adoptedMaps) m.close();
    this.#adoptedMaps = [];
    this.#obj?.close();
    this.#obj = null;
    this.#lock?.release();
    this.#lock = null;
    this.#paths = null;
    this.#attachedHere = false;
    if (this.#pinDirFd !== null) closeSync(this.#pinDirFd);
    this.#pinDirFd = null;
  }

  /** Verdict counters summed over CPUs. */
  counters(): Record<ServerReason, bigint> {
    return readCounters(this.map('spak_server_counters'), SERVER_REASON_NAMES);
  }

  /**
   * Per protected destination (as configured: address, port, protocol), the counts of its
   * new-connection decisions by outcome (admit_tag, refuse_tag, ...), summed over CPUs.
   */
  destinationCounters(): DestinationCounters[] {
    return readDestinationCounters(this.map('spak_dest_counters'), this.#opts.protect, this.#counterIdx);
  }

  /** One sweep of the flow and replay tables (the daemon runs it every sweepIntervalSeconds). */
  sweep(nowS = monotonicSeconds()): SweepResult {
    const o = this.#opts;
    const flows = sweepFlows(this.map('spak_flows'), { nowS, idleS: o.flowIdleSeconds, finS: o.flowFinSeconds });
    const replay = sweepReplay(this.map('spak_replay'), timeStepAt(Date.now(), o.stepSeconds), o.stepWindow);
    const allowRemoved = sweepAllowlist(this.map('spak_allow'), monotonicNs());
    return { ...flows, ...replay, allowRemoved };
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

  #destinationMaps() {
    const m = (name: ServerMapName) => this.map(name);
    return {
      spak_ports: m('spak_ports'), spak_port_slots: m('spak_port_slots'), spak_protected: m('spak_protected'),
      spak_dests: m('spak_dests'), spak_protected_addrs: m('spak_protected_addrs'),
      spak_udp_ports: m('spak_udp_ports'), spak_udp_protected: m('spak_udp_protected'),
    };
  }

  /** Records the kernel's live connections to protected TCP destinations as flows. */
  #seedFlows(): number {
    const flows = this.map('spak_flows');
    const covers = coverage(this.#opts.protect);
    const nowS = monotonicSeconds();
    let n = 0;
    for (const s of liveTcpSockets()) {
      if (!covers(s.localAddr, s.localPort)) continue;
      const key = encodeFlowKey({ saddr: s.remoteAddr, daddr: s.localAddr, sport: s.remotePort, dport: s.localPort });
      flows.update(key, encodeFlow({ seenS: nowS, state: SPAK_FLOW_OPEN }));
      n++;
    }
    return n;
  }

  /**
   * `spak server stop IFACE`: the one explicit way to remove protection. Stops a daemon that
   * still serves the interface, detaches the link, removes every pin. Returns what it did.
   */
  static remove(iface: string, bpffs = DEFAULT_BPFFS): string[] {
    return removeServer(iface, bpffs);
  }
}

/** Bad always-allow entries are refused before anything is written. */
function checkAlwaysAllow(cidrs: string[] | undefined): void {
  if (!cidrs) return;
  if (cidrs.length > SPAK_MAX_ALWAYS_ALLOW) throw new Error(`${cidrs.length} always-allow entries: at most ${SPAK_MAX_ALWAYS_ALLOW}`);
  for (const c of cidrs) parseCidr(c);
}
