// What a server runs with, and the one place it is checked. checkConfig turns options into a
// Checked value; the program (program.ts) writes only Checked values, and the map writers
// (destinations.ts, knockmaps.ts, allowlist.ts) trust what they are handed.
import type { Logger } from 'pino';
import type { XdpMode } from '../bpf/libbpf.js';
import { parseCidr } from '../wire/address.js';
import { SPAK_MAX_ALWAYS_ALLOW } from '../wire/layout.js';
import { checkDestinations, type ProtectedDest, type ServerKey } from './destinations.js';
import { checkKnockMaps, type KnockMapOptions } from './knockmaps.js';

/**
 * Where the server program runs: XDP (the default, cheapest), or TC ingress (through a tcx link)
 * for interfaces or drivers where XDP cannot. 'tc' is the configuration's word for TC ingress.
 */
export type Enforcement = 'xdp' | 'tc';
export const ENFORCEMENTS: readonly Enforcement[] = ['xdp', 'tc'];

/** The program of server.bpf.o for each enforcement mode. */
export const SERVER_PROGRAMS: Record<Enforcement, string> = { xdp: 'spak_server', tc: 'spak_server_tc' };

/** What the configuration maps hold: everything a reload may change but seedExisting. */
export interface ProgramConfig {
  keys: ServerKey[];
  protect: ProtectedDest[];
  stepSeconds: number;
  stepWindow: number;
  /** An open flow idle this long whose socket is gone is removed. */
  flowIdleSeconds: number;
  /** A closing flow idle this long whose socket is gone is removed. */
  flowFinSeconds: number;
  /** Knock mode: the XDP side of the knock port (port, clients, rate limit); off when absent. */
  knock?: KnockMapOptions | undefined;
  /** Sources every protected destination admits: IPv4/IPv6 addresses and CIDRs. */
  alwaysAllow?: string[] | undefined;
  /** Drop TCP segments (but RSTs) to ports of protected addresses with no socket, instead of the kernel's RST (bpf/spak_stealth.h). */
  stealth?: boolean | undefined;
  /** The same for UDP datagrams, instead of the kernel's ICMP port unreachable. */
  stealthUdp?: boolean | undefined;
}

/** Table sizes, fixed when the program is loaded (server/maps.ts names the tables they size). */
export interface ProgramCapacities {
  replayCapacity?: number | undefined;
  flowCapacity?: number | undefined;
  /** Entries of the knock allowlist (spak_allow). */
  allowCapacity?: number | undefined;
}

export interface ServerOptions extends ProgramConfig, ProgramCapacities {
  iface: string;
  /** Default 'xdp'. */
  enforcement?: Enforcement | undefined;
  /** XDP mode (enforcement 'xdp' only). */
  xdpMode: XdpMode;
  /** Seed flows from the kernel's sockets at first start, so existing connections survive. */
  seedExisting: boolean;
  /** Where bpffs is (mounted there when missing). */
  bpffs?: string | undefined;
  logger?: Logger | undefined;
}

/** What a reload may change (see SpakServer.reload). */
export type ReloadableOptions = ProgramConfig & Pick<ServerOptions, 'seedExisting'>;

declare const CHECKED: unique symbol;
/** Options that passed checkConfig: nothing downstream checks them again. Frozen (shallowly). */
export type Checked<T extends ProgramConfig> = Readonly<T> & { readonly [CHECKED]: true };

/** Every value this module handed out as Checked, so that checking one again costs nothing. */
const checked = new WeakSet<object>();

function seal<T extends ProgramConfig>(o: T): Checked<T> {
  const c = Object.freeze({ ...o });
  checked.add(c);
  return c as Checked<T>;
}

/**
 * The one validation step: one-line errors for what the maps cannot express, before anything is
 * written. A value it returned before passes through as it is.
 */
export function checkConfig<T extends ProgramConfig>(o: T | Checked<T>): Checked<T> {
  if (checked.has(o)) return o as Checked<T>;
  checkDestinations(o.protect, o.keys);
  if (o.knock) checkKnockMaps(o.knock);
  checkAlwaysAllow(o.alwaysAllow);
  return seal(o);
}

/** base with every configuration field taken from `c`: both were checked, and checkConfig reads only those fields. */
export function withConfig<T extends ProgramConfig>(base: Checked<T>, c: Checked<ProgramConfig>): Checked<T> {
  return seal({ ...base, ...c });
}

/** base with another knock setting: only that is checked. */
export function withKnock<T extends ProgramConfig>(base: Checked<T>, knock: KnockMapOptions | undefined): Checked<T> {
  if (knock) checkKnockMaps(knock);
  return seal({ ...base, knock });
}

function checkAlwaysAllow(cidrs: string[] | undefined): void {
  if (!cidrs) return;
  if (cidrs.length > SPAK_MAX_ALWAYS_ALLOW) throw new Error(`${cidrs.length} always-allow entries: at most ${SPAK_MAX_ALWAYS_ALLOW}`);
  for (const c of cidrs) parseCidr(c);
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
