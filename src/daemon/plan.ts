// What a server config means for the daemon: the plan (interfaces, server options, knock
// section, account) read from the file, what of it a reload may change, and where the knock
// state lives. Pure reading and checking; src/daemon/daemon.ts runs the plan.
import type { KeyObject } from 'node:crypto';
import path from 'node:path';
import type { XdpMode } from '../bpf/libbpf.js';
import { resolveSecret, type KnockConfig, type ServerConfig } from '../config/schema.js';
import { loadConfig, type ConfigPath } from '../config/load.js';
import { DEFAULT_STATE_ROOT, knockOptionsFromConfig } from '../knock/service.js';
import { ALL_ADDRESSES, type ProtectedDest } from '../server/destinations.js';
import type { ReloadableOptions, ServerOptions } from '../server/server.js';
import { resolveAccount, type Account } from './privdrop.js';

/** Command-line options: they win over the file, at start and at every reload. */
export interface DaemonOverrides {
  xdpMode?: XdpMode | undefined;
  /** --enforcement: every interface. */
  enforcement?: 'xdp' | 'tc' | undefined;
  stepSeconds?: number | undefined;
  stepWindow?: number | undefined;
  flowIdleSeconds?: number | undefined;
  replayCapacity?: number | undefined;
  flowCapacity?: number | undefined;
  allAddresses?: boolean | undefined;
  /** false: --no-seed. */
  seed?: boolean | undefined;
  /** true: --stealth, --stealth-udp. */
  stealth?: boolean | undefined;
  stealthUdp?: boolean | undefined;
}

export interface DaemonInterface {
  name: string;
  xdpMode: XdpMode;
  enforcement?: 'xdp' | 'tc' | undefined;
}

/** Everything a daemon runs with, read and checked completely before anything is attached or swapped. */
export interface DaemonPlan {
  interfaces: DaemonInterface[];
  server: Omit<ServerOptions, 'iface' | 'xdpMode' | 'enforcement' | 'logger' | 'bpffs'>;
  knockConfig?: KnockConfig | undefined;
  /** The knock server key the plan was read with (a reload cannot change it). */
  knockServerKey?: KeyObject | undefined;
  account?: Account | undefined;
}


/**
 * Reads the config file (with the SPAK_* overrides) and everything it names (key files, knock
 * keys and clients); throws one line.
 */
export function planFromConfig(config: ConfigPath | string, ov: DaemonOverrides = {}): DaemonPlan {
  const where: ConfigPath = typeof config === 'string' ? { file: config, from: '--config' } : config;
  const cfg = loadConfig(where).server;
  if (!cfg) throw new Error(`${where.file}: no "server" section`);
  return planFromServerConfig(cfg, where.file, ov);
}

/**
 * The plan of a validated server section (read once by the caller); `file` names where it came
 * from in errors. Reads what it names (key files, knock keys and clients); throws one line.
 */
export function planFromServerConfig(cfg: ServerConfig, file: string, ov: DaemonOverrides = {}): DaemonPlan {
  const mode = ov.xdpMode ?? cfg.xdpMode;
  const interfaces: DaemonInterface[] = cfg.interfaces
    ? cfg.interfaces.map((i) => ({
      name: i.name, xdpMode: ov.xdpMode ?? i.xdpMode ?? cfg.xdpMode, enforcement: ov.enforcement ?? i.enforcement ?? cfg.enforcement,
    }))
    : [{ name: cfg.interface!, xdpMode: mode, enforcement: ov.enforcement ?? cfg.enforcement }];
  let protect: ProtectedDest[] = cfg.protect;
  const knock = cfg.knock ? knockOptionsFromConfig(cfg.knock) : undefined;
  if (ov.allAddresses) protect = allAddresses(protect);
  return {
    interfaces,
    server: {
      keys: cfg.keys.map((k, i) => ({ id: k.id, key: resolveSecret(k, `${file}: server.keys[${i}]`) })),
      protect,
      stepSeconds: ov.stepSeconds ?? cfg.stepSeconds,
      stepWindow: ov.stepWindow ?? cfg.stepWindow,
      flowIdleSeconds: ov.flowIdleSeconds ?? cfg.flowIdleSeconds,
      flowFinSeconds: cfg.flowFinSeconds,
      replayCapacity: ov.replayCapacity ?? cfg.replayCapacity,
      flowCapacity: ov.flowCapacity ?? cfg.flowCapacity,
      alwaysAllow: cfg.alwaysAllow,
      allowCapacity: cfg.allowCapacity,
      // The XDP knock maps are written before the program goes in; the receiver keeps them current.
      knock: knock?.maps,
      seedExisting: cfg.seedExisting && ov.seed !== false,
      stealth: ov.stealth ?? cfg.stealth,
      stealthUdp: ov.stealthUdp ?? cfg.stealthUdp,
    },
    knockConfig: cfg.knock,
    knockServerKey: knock?.serverKey,
    account: cfg.user !== undefined ? resolveAccount(cfg.user, cfg.group) : undefined,
  };
}

/** --all-addresses: every protected port on every address of both families. */
export function allAddresses(protect: ProtectedDest[]): ProtectedDest[] {
  const byPort = new Map<string, ProtectedDest>();
  for (const d of protect) {
    if (d.dialAddress !== undefined) throw new Error(`--all-addresses cannot keep the dial address of ${d.address} port ${d.port}`);
    const id = `${d.protocol ?? 'tcp'}/${d.port}`;
    if (!byPort.has(id)) byPort.set(id, { ...d, address: ALL_ADDRESSES });
  }
  return [...byPort.values()];
}

/** Why a new plan cannot be swapped in by a reload (a restart is needed), or null. */
export function restartNeeded(old: DaemonPlan, next: DaemonPlan): string | null {
  const ifs = (p: DaemonPlan) => p.interfaces.map((i) => `${i.name}/${i.xdpMode}/${i.enforcement ?? 'xdp'}`).join(',');
  if (ifs(old) !== ifs(next)) return `the interfaces changed (${ifs(old)} -> ${ifs(next)})`;
  for (const k of ['replayCapacity', 'flowCapacity', 'allowCapacity'] as const)
    if (old.server[k] !== next.server[k]) return `${k} changed (${old.server[k]} -> ${next.server[k]})`;
  if (JSON.stringify(old.knockConfig ?? null) !== JSON.stringify(next.knockConfig ?? null)) return 'the knock section changed';
  // The same file may hold another key now: the knock receiver would still open with the old one.
  if (old.knockServerKey && next.knockServerKey && keyBytes(old.knockServerKey) !== keyBytes(next.knockServerKey))
    return `the knock server key in ${next.knockConfig?.serverKeyFile} changed`;
  const who = (a?: Account) => (a ? `${a.uid}:${a.gid}` : 'root');
  if (who(old.account) !== who(next.account)) return `user/group changed (${who(old.account)} -> ${who(next.account)})`;
  return null;
}

function keyBytes(k: KeyObject): string {
  return k.export({ format: 'der', type: 'pkcs8' }).toString('hex');
}

export function reloadable(p: DaemonPlan): ReloadableOptions {
  const s = p.server;
  return {
    keys: s.keys, protect: s.protect, stepSeconds: s.stepSeconds, stepWindow: s.stepWindow, flowIdleSeconds: s.flowIdleSeconds,
    flowFinSeconds: s.flowFinSeconds, knock: s.knock, alwaysAllow: s.alwaysAllow, seedExisting: s.seedExisting,
    stealth: s.stealth, stealthUdp: s.stealthUdp,
  };
}

/** Where the knock service keeps its state (knock.stateDir, else /var/lib/spak/FIRST-INTERFACE). */
export function stateDirOf(plan: DaemonPlan): string {
  return plan.knockConfig?.stateDir ?? path.join(DEFAULT_STATE_ROOT, plan.interfaces[0]!.name);
}
