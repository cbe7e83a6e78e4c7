// The knock receiver: a UDP socket on the knock port. XDP has already rate-limited the source and
// checked the client id and prefilter tag; we check them again (cheap, and XDP may be off or
// generic), open the HPKE message, check freshness, server address, replay and the client's
// policy, then write allowlist entries. Every outcome is a counter; nothing escapes the handler.
import type { KeyObject } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { BpfMap } from '../bpf/libbpf.js';
import type { KnockConfig } from '../config/schema.js';
import { allowSource, revokeSource } from '../server/allowlist.js';
import { GrantTable, type AllowKey } from './grants.js';
import { encodeAllowKey } from '../wire/layout.js';
import { addrFrom16, addrTo16 } from '../wire/address.js';
import { checkFreshness } from './checks.js';
import { inNetwork } from '../wire/address.js';
import { ClientsDirectory, scanClientsDir, type ClientsChange, type LoadedClient, type PolicyDefaults } from './clients.js';
import { writeKnockMaps, type KnockMaps, type KnockMapOptions } from '../server/knockmaps.js';
import type { MapSet } from '../server/maps.js';
import { knockMapOptions } from './prefilter.js';
import { KNOCK_REJECTS, KnockOpener, type Access } from './datagram.js';
import { loadPrivateKey } from './keys.js';
import { ReplayStore } from './replaystore.js';

/** Reasons the daemon adds to the datagram's own (KNOCK_REJECTS). */
export const KNOCK_POLICY_REJECTS = [
  'source_not_allowed',    // packet source (or the address named) outside the client's fromNetworks
  'port_not_allowed',      // a requested protocol/port is not in the policy (or nothing is allowed)
  'duration_over_max',     // requested duration above the policy's maximum
  'bad_allow_address',     // named address to allow is unspecified, multicast or broadcast
  'replay_store_failed',   // the nonce could not be persisted: refused rather than replayable
  'allowlist_failed',      // writing the allowlist map failed (full?)
  'internal_error',        // anything else thrown while handling
] as const;
export type KnockRejectReason = (typeof KNOCK_REJECTS)[number] | (typeof KNOCK_POLICY_REJECTS)[number];
export const KNOCK_REJECT_REASONS: readonly KnockRejectReason[] = [...KNOCK_REJECTS, ...KNOCK_POLICY_REJECTS];
export type KnockCounterName = 'knock_accepted' | `knock_rejected_${KnockRejectReason}`;
export const KNOCK_COUNTER_NAMES: readonly KnockCounterName[] = ['knock_accepted', ...KNOCK_REJECT_REASONS.map((r) => `knock_rejected_${r}` as const)];
export type KnockCounters = Record<KnockCounterName, number>;
/** A knock's outcome: accepted, or the reason it was rejected. */
export type KnockResult = 'accepted' | KnockRejectReason;
export interface KnockClientCount { client: string; result: KnockResult; count: number }
/** The client label of knocks that identified no known client (bad datagram, unknown id). */
export const UNKNOWN_CLIENT = '(unknown)';

export type KnockServiceMaps = KnockMaps & MapSet<'spak_allow'>;

export interface KnockServiceOptions {
  /**
   * The interface(s) served: their addresses count as the server's, and the default stateDir is
   * under the first one's name.
   */
  iface?: string | string[] | undefined;
  rescanMs?: number;
  /**
   * Where each knock's decision is logged: a flood of knocks must not flood the log, so the
   * daemon hands in a rate-limited one (observe/log.ts knockLog).
   */
  decisions: KnockDecisionLog;
}

/** A log that may hold lines back (counting them) and reports what it held on flush(). */
export interface KnockDecisionLog {
  write(level: 'info' | 'warn', obj: object, msg: string, kind: string): unknown;
  flush(): void;
}

export interface KnockService {
  stop(): void;
  counters(): KnockCounters;
  /** Knocks by client name (UNKNOWN_CLIENT when none was identified) and result, since the service started. */
  clientCounters(): KnockClientCount[];
  /** The bound sockets' addresses (tests use the port when the config asks for port 0). */
  addresses(): { address: string; port: number }[];
  /** Rescans the clients directory now (SIGHUP, tests). */
  rescan(): void;
  /**
   * After a reload swapped in new programs: the knock maps to keep current from now on (the
   * allowlists are the same state maps; the knock config and client maps are the new ones).
   * Writes the clients there at once.
   */
  setMaps(maps: KnockServiceMaps | KnockServiceMaps[]): void;
}

export const DEFAULT_STATE_ROOT = '/var/lib/spak';
const NS = 1_000_000_000n;

/** Addresses an allowlist entry must never name. */
function unusableAllowAddress(a16: Buffer): boolean {
  const v4 = a16.subarray(0, 12).equals(Buffer.from('00000000000000000000ffff', 'hex'));
  if (v4) return a16[12] === 0 || a16[12]! >= 224; // 0.0.0.0/8, multicast, reserved, broadcast
  return a16.every((b) => b === 0) || a16[0] === 0xff;
}

const normalize = (addr: string): string => addrFrom16(addrTo16(addr)); // "::ffff:1.2.3.4" -> "1.2.3.4"

/** Binds the knock socket(s): dual-stack on :: (plus IPv4 when the system keeps v6 sockets v6-only). */
async function bindSockets(port: number, listen: string | undefined, onMessage: (m: Buffer, r: RemoteInfo) => void): Promise<Socket[]> {
  const bindOne = (type: 'udp4' | 'udp6', address: string, p: number): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const s = createSocket(type === 'udp6' ? { type, ipv6Only: false } : { type });
      s.once('error', (err) => { s.close(); reject(err); });
      s.bind({ port: p, address, exclusive: true }, () => {
        s.removeAllListeners('error');
        s.on('error', () => undefined); // a receive error must not kill the daemon
        s.on('message', onMessage);
        resolve(s);
      });
    });
  if (listen !== undefined) return [await bindOne(isIP(listen) === 4 ? 'udp4' : 'udp6', listen, port)];
  let v6: Socket;
  try {
    v6 = await bindOne('udp6', '::', port);
  } catch {
    return [await bindOne('udp4', '0.0.0.0', port)]; // no IPv6 on this host
  }
  try {
    // Fails with EADDRINUSE when the v6 socket already takes IPv4 (bindv6only=0): that is fine.
    return [v6, await bindOne('udp4', '0.0.0.0', v6.address().port)];
  } catch {
    return [v6];
  }
}

const policyDefaults = (cfg: KnockConfig): PolicyDefaults => ({
  allow: cfg.allow, maxDurationSeconds: cfg.maxDurationSeconds, defaultDurationSeconds: cfg.defaultDurationSeconds,
  fromNetworks: cfg.fromNetworks, idleExtensionSeconds: cfg.idleExtensionSeconds, graceSeconds: cfg.graceSeconds,
});

/**
 * The XDP side of knock mode from the config, with the clients the directory holds now: for
 * SpakServer's `knock` option, so the program is swapped in with the knock port already on.
 * startKnockService then keeps the same maps current.
 */
export function knockOptionsFromConfig(cfg: KnockConfig): { maps: KnockMapOptions; serverKey: KeyObject } {
  const serverKey = loadPrivateKey(cfg.serverKeyFile);
  const { clients } = scanClientsDir(cfg.clientsDir, serverKey, policyDefaults(cfg));
  return { maps: knockMapOptions({ port: cfg.port, clients: [...clients.values()].map((c) => c.publicKey), serverKey, rate: cfg.rate, burst: cfg.burst }), serverKey };
}

/**
 * Starts knock mode: writes the XDP knock maps from the clients directory, opens the replay
 * store, binds the knock socket and keeps all of it current until stop().
 */
export async function startKnockService(
  maps: KnockServiceMaps | KnockServiceMaps[], cfg: KnockConfig, logger: Logger, opts: KnockServiceOptions,
): Promise<KnockService> {
  // One set of maps per interface served: every grant and every client goes to all of them.
  let sets = Array.isArray(maps) ? maps : [maps];
  if (sets.length === 0) throw new Error('knock: no maps to serve');
  const ifaces = opts.iface === undefined ? [] : Array.isArray(opts.iface) ? opts.iface : [opts.iface];
  const serverKey = loadPrivateKey(cfg.serverKeyFile);
  const stateDir = cfg.stateDir ?? (ifaces[0] !== undefined ? path.join(DEFAULT_STATE_ROOT, ifaces[0]) : undefined);
  if (stateDir === undefined) throw new Error('knock: give stateDir (where the replay cache survives restarts)');
  const windowS = cfg.windowSeconds;
  const replay = ReplayStore.open(path.join(stateDir, 'knock-replay'), windowS, Math.floor(Date.now() / 1000));
  let grants: GrantTable;
  try {
    grants = GrantTable.open(path.join(stateDir, 'knock-grants'), () => sets.map((m) => m.spak_allow));
  } catch (err) {
    replay.close();
    throw err;
  }
  const counts = Object.fromEntries(KNOCK_COUNTER_NAMES.map((n) => [n, 0])) as KnockCounters;
  // Per client name and result; knocks that name no known client count under UNKNOWN_CLIENT.
  const byClient = new Map<string, Map<KnockResult, number>>();
  const countClient = (client: LoadedClient | null, result: KnockResult): void => {
    const name = client?.name ?? UNKNOWN_CLIENT;
    let m = byClient.get(name);
    if (!m) byClient.set(name, (m = new Map()));
    m.set(result, (m.get(result) ?? 0) + 1);
  };
  const log = opts.decisions;
  const writeClients = (now: Map<number, LoadedClient>): void => {
    const o = knockMapOptions({ port: cfg.port, clients: [...now.values()].map((c) => c.publicKey), serverKey, rate: cfg.rate, burst: cfg.burst });
    for (const m of sets) writeKnockMaps(m, o);
  };

  const onChange = (c: ClientsChange, now: Map<number, LoadedClient>): void => {
    try {
      writeClients(now); // a removed client leaves the XDP map here: its next knock dies there
    } catch (err) {
      logger.error({ err }, 'knock: writing the XDP client map failed');
    }
    for (const x of c.added) logger.info({ client: x.name, file: x.pubFile }, `knock: client ${x.name} added`);
    for (const x of c.changed) logger.info({ client: x.name, file: x.pubFile }, `knock: client ${x.name} reloaded`);
    for (const x of c.removed) {
      let n = 0;
      try {
        n = grants.revokeClient(x.id);
      } catch (err) {
        logger.error({ err, client: x.name }, 'knock: revoking allowlist entries failed');
      }
      logger.info({ client: x.name, revokedEntries: n }, `knock: client ${x.name} removed; ${n} allowlist entr${n === 1 ? 'y' : 'ies'} revoked`);
    }
  };

  const dir = new ClientsDirectory(cfg.clientsDir, serverKey, policyDefaults(cfg), onChange, (line) => logger.warn(`knock: ${line}`), opts.rescanMs ?? 5000);

  // The addresses knocks may name: configured ones, the listen address and the interface's own.
  let serverAddrs = new Set<string>();
  const refreshAddrs = (): void => {
    const next = new Set(cfg.serverAddresses.map((a) => addrTo16(a).toString('hex')));
    if (cfg.listenAddress) next.add(addrTo16(cfg.listenAddress).toString('hex'));
    const all = networkInterfaces();
    for (const i of ifaces) for (const a of all[i] ?? []) next.add(addrTo16(a.address).toString('hex'));
    serverAddrs = next;
  };

  const opener = new KnockOpener(serverKey, (id) => dir.current.get(id));

  const reject = (reason: KnockRejectReason, src: string, client: LoadedClient | null, detail?: string): void => {
    counts[`knock_rejected_${reason}`]++;
    countClient(client, reason);
    log.write('warn', { reason, src, ...(client ? { client: client.name } : {}), ...(detail ? { detail } : {}) },
      `knock from ${src}${client ? ` (client ${client.name})` : ''} rejected: ${reason}${detail ? `: ${detail}` : ''}`, 'knock_rejected');
  };

  const handle = async (msg: Buffer, rinfo: RemoteInfo): Promise<void> => {
    let src = rinfo.address;
    let client: LoadedClient | null = null;
    try {
      src = normalize(rinfo.address);
      const opened = await opener.open(msg);
      if (!opened.ok) return reject(opened.reason, src, null, opened.detail);
      client = opened.client as LoadedClient;
      // Revoked while HPKE ran: the directory no longer holds this client.
      if (dir.current.get(client.id) !== client) return reject('unknown_client', src, client, 'revoked');
      const p = opened.plain;
      const nowS = Math.floor(Date.now() / 1000);
      const fresh = checkFreshness(p.timestamp, nowS, windowS);
      if (fresh) return reject(fresh, src, client, `timestamp ${p.timestamp}, now ${nowS}`);
      if (!serverAddrs.has(addrTo16(p.serverAddr).toString('hex'))) return reject('wrong_server', src, client, `sent to ${p.serverAddr}`);
      let replayed: boolean;
      try {
        replayed = replay.cache.seen(client.id, p.nonce, p.timestamp, nowS);
      } catch (err) {
        return reject('replay_store_failed', src, client, (err as Error).message);
      }
      if (replayed) return reject('replayed', src, client);
      const pol = client.policy;
      const src16 = addrTo16(src);
      if (pol.fromNetworks.length > 0 && !pol.fromNetworks.some((n) => inNetwork(src16, n))) return reject('source_not_allowed', src, client);
      const want: Access[] = p.open.length > 0 ? p.open : pol.allow;
      if (want.length === 0) return reject('port_not_allowed', src, client, 'the policy allows nothing');
      const denied = want.filter((a) => !pol.allow.some((b) => b.proto === a.proto && b.port === a.port));
      if (denied.length > 0) return reject('port_not_allowed', src, client, denied.map((a) => `${a.proto}/${a.port}`).join(','));
      const durationS = p.durationS === 0 ? pol.defaultDurationSeconds : p.durationS;
      if (durationS > pol.maxDurationSeconds) return reject('duration_over_max', src, client, `${durationS} s > ${pol.maxDurationSeconds} s`);
      // Behind NAT a client may name the address to allow (its public one); else the packet's source.
      const addr = p.allowAddr ?? src;
      const addr16 = addrTo16(addr);
      if (unusableAllowAddress(addr16)) return reject('bad_allow_address', src, client, addr);
      // A named address must satisfy fromNetworks too, or naming one would sidestep it.
      if (p.allowAddr !== null && pol.fromNetworks.length > 0 && !pol.fromNetworks.some((n) => inNetwork(addr16, n)))
        return reject('source_not_allowed', src, client, `address to allow ${addr} is outside fromNetworks`);
      const expiresNs = process.hrtime.bigint() + BigInt(durationS) * NS;
      const unique = [...new Map(want.map((a) => [`${a.proto}/${a.port}`, a])).values()];
      const done: { key: AllowKey; raw: Buffer; map: BpfMap; old: Buffer | null }[] = [];
      try {
        for (const a of unique) {
          const key: AllowKey = { addr, proto: a.proto, port: a.port };
          const raw = encodeAllowKey(key);
          for (const { spak_allow: map } of sets) {
            const old = map.lookup(raw);
            allowSource(map, { ...key, expiresNs, idleNs: BigInt(pol.idleExtensionSeconds) * NS, graceNs: BigInt(pol.graceSeconds) * NS });
            done.push({ key, raw, map, old });
          }
        }
      } catch (err) {
        // All or nothing: a knock answered "rejected" must not leave half its ports open.
        for (const d of done) {
          try {
            if (d.old) d.map.update(d.raw, d.old);
            else revokeSource(d.map, d.key);
          } catch {
            // the map refuses writes: the reason below says so
          }
        }
        return reject('allowlist_failed', src, client, (err as Error).message);
      }
      try {
        for (const a of unique) grants.add({ addr, proto: a.proto, port: a.port }, client.id, expiresNs);
      } catch (err) {
        // Written and in memory; only a revocation after a restart would miss it.
        logger.error({ err, client: client.name }, 'knock: saving the grant record failed');
      }
      counts.knock_accepted++;
      countClient(client, 'accepted');
      const opens = unique.map((a) => `${a.proto}/${a.port}`).join(',');
      log.write('info', { client: client.name, src, addr, open: opens, durationS }, `knock: client ${client.name} from ${src}: ${addr} may open ${opens} for ${durationS} s`, 'knock_accepted');
    } catch (err) {
      reject('internal_error', src, client, (err as Error)?.message ?? String(err));
    }
  };

  refreshAddrs();
  dir.start();
  let sockets: Socket[];
  try {
    writeClients(dir.current);
    sockets = await bindSockets(cfg.port, cfg.listenAddress, (m, r) => void handle(m, r).catch(() => undefined));
  } catch (err) {
    dir.stop();
    replay.close();
    grants.close();
    try {
      for (const m of sets) writeKnockMaps(m, undefined); // no socket: XDP must not pass knocks to a closed port
    } catch {
      // the error that matters is the one thrown below
    }
    throw err;
  }
  if (serverAddrs.size === 0) logger.warn('knock: no server addresses (no serverAddresses, no interface addresses): every knock is wrong_server');
  // Compacting rewrites the whole replay file: once per window is enough to bound its size.
  const compactEvery = Math.max(1, Math.ceil((windowS * 1000) / (opts.rescanMs ?? 5000)));
  let ticks = 0;
  const housekeeping = setInterval(() => {
    try {
      refreshAddrs();
      grants.prune(process.hrtime.bigint());
      if (++ticks % compactEvery === 0) replay.compact(Math.floor(Date.now() / 1000));
      log.flush();
    } catch (err) {
      logger.error({ err }, 'knock: housekeeping failed');
    }
  }, opts.rescanMs ?? 5000);
  housekeeping.unref();

  return {
    stop() {
      clearInterval(housekeeping);
      dir.stop();
      for (const s of sockets) s.close();
      log.flush();
      replay.close();
      grants.close();
    },
    counters: () => ({ ...counts }),
    clientCounters: () => [...byClient].flatMap(([client, m]) => [...m].map(([result, count]) => ({ client, result, count }))),
    addresses: () => sockets.map((s) => ({ address: s.address().address, port: s.address().port })),
    rescan: () => dir.rescan(),
    setMaps(next) {
      const list = Array.isArray(next) ? next : [next];
      if (list.length === 0) throw new Error('knock: no maps to serve');
      sets = list;
      writeClients(dir.current);
    },
  };
}
