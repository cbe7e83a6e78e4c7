// `spak status`: what the pinned state of each protected interface says, read from bpffs
// (<bpffs>/spak/[netns-<ino>/]<iface>), so it works with or without a running daemon. Every
// map is decoded with src/wire/layout.ts, the TypeScript mirror of the C header.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { BpfLink, BpfMap, LINK_TYPE_TCX, LINK_TYPE_XDP, readLockHolder, u32 } from '../bpf/libbpf.js';
import { monotonicNs } from '../bpf/clock.js';
import { readCounters } from '../bpf/counters.js';
import { currentPinPaths, DEFAULT_BPFFS, legacyPinPaths, netnsScope } from '../bpf/pins.js';
import {
  decodeAllowEntry,
  decodeAllowKey,
  decodeConfig,
  decodeDest,
  decodeDestInfo,
  decodeKnockConfig,
  SPAK_DEST_BIND_SOURCE,
} from '../wire/layout.js';
import { SERVER_REASON_NAMES, type ServerReason } from '../wire/reasons.js';
import type { ServerMapName } from '../server/maps.js';
import { TABLES, tableFill, type TableFill, type TableName } from './tables.js';

export interface StatusDestination { address: string; port: number; protocol: 'tcp' | 'udp'; keyIds: number[]; bindSource: boolean }
export interface StatusAllowEntry { address: string; protocol: 'tcp' | 'udp'; port: number; secondsLeft: number }

export interface InterfaceStatus {
  interface: string;
  pinDir: string;
  /** The pinned link: hook (xdp, tcx), mode for XDP (native, generic), whether it is attached. */
  link: { id: number; programId: number; hook: string; mode: 'native' | 'generic' | null; attached: boolean } | null;
  /** The daemon holding the interface's lock, or null when none runs. */
  daemonPid: number | null;
  stepSeconds: number | null;
  stepWindow: number | null;
  knockPort: number | null;
  keyIds: number[];
  destinations: StatusDestination[];
  allowlist: StatusAllowEntry[];
  tables: Partial<Record<TableName, TableFill>>;
  counters: Partial<Record<ServerReason, number>>;
  /** Packets a second by reason over the sample interval (only reasons that moved); null when not sampled. */
  rates: Partial<Record<ServerReason, number>> | null;
  /** What could not be read (a map missing from the pins, ...). */
  problems: string[];
}

const NS = 1_000_000_000n;

/** The interfaces with pinned server state in this network namespace. */
export function pinnedInterfaces(bpffs = DEFAULT_BPFFS): string[] {
  const names = new Set(dirsIn(path.join(bpffs, 'spak', netnsScope())));
  // An earlier version's pins (see legacyPinPaths) count where they hold a link.
  for (const n of netnsScope() ? dirsIn(path.join(bpffs, 'spak')) : [])
    if (/^[\w.@:-]{1,15}$/.test(n) && existsSync(legacyPinPaths(n, 'server', bpffs)?.link ?? '')) names.add(n);
  return [...names].sort();
}

function dirsIn(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => !n.startsWith('netns-') && isDir(path.join(dir, n)));
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** The pinned maps of one interface, opened for reading; close() releases them. */
export class PinnedServer {
  readonly #maps = new Map<ServerMapName, BpfMap | null>();
  readonly problems: string[] = [];
  constructor(readonly iface: string, readonly bpffs = DEFAULT_BPFFS) {}

  get paths() {
    return currentPinPaths(this.iface, 'server', this.bpffs);
  }

  /** The pinned map (server/maps.ts names them), or null (noted in problems) when it cannot be opened. */
  map(name: ServerMapName): BpfMap | null {
    if (this.#maps.has(name)) return this.#maps.get(name)!;
    let m: BpfMap | null = null;
    try {
      m = BpfMap.openPinned(this.paths.map(name));
    } catch (err) {
      this.problems.push(`${name}: ${(err as Error).message}`); // once per map
    }
    this.#maps.set(name, m);
    return m;
  }

  counters(): Record<ServerReason, bigint> | null {
    const m = this.map('spak_server_counters');
    return m ? readCounters(m, SERVER_REASON_NAMES) : null;
  }

  close(): void {
    for (const m of this.#maps.values()) m?.close();
    this.#maps.clear();
  }
}


function readLink(linkPath: string): InterfaceStatus['link'] {
  let link: BpfLink;
  try {
    link = BpfLink.openPinned(linkPath);
  } catch {
    return null;
  }
  try {
    const info = link.info();
    const hook = info.type === LINK_TYPE_XDP ? 'xdp' : info.type === LINK_TYPE_TCX ? 'tcx' : `link type ${info.type}`;
    const mode = info.type === LINK_TYPE_XDP ? link.xdpMode() : null;
    // An XDP or tcx link whose interface went away (or that was detached) reports ifindex 0 (defunct).
    const attached = info.type === LINK_TYPE_XDP || info.type === LINK_TYPE_TCX ? info.ifindex !== 0 : true;
    return { id: info.id, programId: info.progId, hook, mode, attached };
  } finally {
    link.close();
  }
}

function readDestinations(p: PinnedServer): StatusDestination[] {
  const out: StatusDestination[] = [];
  const protectedMap = p.map('spak_protected');
  const dests = p.map('spak_dests');
  if (protectedMap && dests) {
    const { keys, values } = protectedMap.lookupBatch();
    keys.forEach((k, i) => {
      const d = decodeDest(k);
      const raw = dests.lookup(u32(values[i]!.readUInt32LE(0)));
      const info = raw ? decodeDestInfo(raw) : { flags: 0, keys: [] };
      out.push({ address: d.addr, port: d.port, protocol: 'tcp', keyIds: info.keys.map((x) => x.keyId), bindSource: (info.flags & SPAK_DEST_BIND_SOURCE) !== 0 });
    });
  }
  const udp = p.map('spak_udp_protected');
  if (udp) for (const k of udp.keys()) {
    const d = decodeDest(k);
    out.push({ address: d.addr, port: d.port, protocol: 'udp', keyIds: [], bindSource: false });
  }
  return out.sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol) || a.address.localeCompare(b.address));
}

function readAllowlist(map: BpfMap, nowNs: bigint): StatusAllowEntry[] {
  const { keys, values } = map.lookupBatch();
  return keys.map((k, i) => {
    const key = decodeAllowKey(k);
    const left = decodeAllowEntry(values[i]!).expiresNs - nowNs;
    return { address: key.addr, protocol: key.proto, port: key.port, secondsLeft: Number(left / (NS / 1000n)) / 1000 };
  }).sort((a, b) => a.secondsLeft - b.secondsLeft);
}

const asNumbers = (c: Record<string, bigint>): Partial<Record<ServerReason, number>> =>
  Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Number(v)]));

/** Everything but the rates, read now. */
export function readInterfaceStatus(iface: string, bpffs = DEFAULT_BPFFS): InterfaceStatus {
  const p = new PinnedServer(iface, bpffs);
  try {
    const paths = p.paths;
    const cfgMap = p.map('spak_config');
    const cfg = cfgMap?.lookup(u32(0));
    const conf = cfg ? decodeConfig(cfg) : null;
    const knockRaw = p.map('spak_knock_config')?.lookup(u32(0));
    const knockPort = knockRaw ? decodeKnockConfig(knockRaw).port : 0;
    const destinations = readDestinations(p);
    const tables: Partial<Record<TableName, TableFill>> = {};
    for (const [t, name] of Object.entries(TABLES) as [TableName, ServerMapName][]) {
      const m = p.map(name);
      if (m) tables[t] = tableFill(m);
    }
    const allowMap = p.map('spak_allow');
    const counters = p.counters();
    return {
      interface: iface,
      pinDir: paths.dir,
      link: readLink(paths.link),
      daemonPid: readLockHolder(paths.lock),
      stepSeconds: conf ? Number(conf.stepNs / NS) : null,
      stepWindow: conf ? conf.stepWindow : null,
      knockPort: knockPort === 0 ? null : knockPort,
      keyIds: [...new Set(destinations.flatMap((d) => d.keyIds))].sort((a, b) => a - b),
      destinations,
      allowlist: allowMap ? readAllowlist(allowMap, monotonicNs()) : [],
      tables,
      counters: counters ? asNumbers(counters) : {},
      rates: null,
      problems: p.problems,
    };
  } finally {
    p.close();
  }
}

/** Per-second rates of the counters that moved between two readings `seconds` apart. */
export function counterRates(before: Partial<Record<string, number>>, after: Partial<Record<string, number>>, seconds: number): Record<string, number> {
  const out: Record<string, number> = {};
  if (!(seconds > 0)) return out;
  for (const [k, v] of Object.entries(after)) {
    const d = (v ?? 0) - (before[k] ?? 0);
    if (d !== 0) out[k] = d / seconds;
  }
  return out;
}

/**
 * Status of the given interfaces (all pinned ones when none is named). With sampleMs > 0 the
 * counters are read twice that far apart and the rates filled in.
 */
export async function collectStatus(ifaces: string[], bpffs: string, sampleMs: number): Promise<InterfaceStatus[]> {
  const first = ifaces.map((i) => readInterfaceStatus(i, bpffs));
  if (sampleMs <= 0) return first;
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, sampleMs));
  return first.map((s) => {
    const p = new PinnedServer(s.interface, bpffs);
    try {
      const later = p.counters();
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (!later) return s;
      const after = asNumbers(later);
      return { ...s, counters: after, rates: counterRates(s.counters, after, seconds) };
    } finally {
      p.close();
    }
  });
}
