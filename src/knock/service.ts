// The knock service: a UDP socket on the knock port. XDP has already rate-limited the source and
// checked the client id and prefilter tag; we check them again (cheap, and XDP may be off or
// generic), open the HPKE message, let decideKnock (decide.ts) judge it, then write the grant to
// every interface's allowlist. Every outcome is a counter; nothing escapes the handler. The XDP
// client maps are not ours: onClients hands each change of the directory to their one writer.
import type { KeyObject } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { BpfMap } from '../bpf/libbpf.js';
import type { KnockConfig } from '../config/schema.js';
import { endFlowsFrom } from '../server/flowend.js';
import { markKnockAccepted, type KnockMapOptions } from '../server/knockmaps.js';
import { nonceTable, type NonceTable } from '../server/knocknonces.js';
import { addrFrom16, addrTo16 } from '../wire/address.js';
import { KnockTally, type KnockClientCount, type KnockCounters } from './counters.js';
import { KnockOpener } from './datagram.js';
import { addressSet, decideKnock, type KnockGrant, type KnockRejectReason } from './decide.js';
import { ClientsDirectory, scanClientsDir, type ClientsChange, type LoadedClient } from './directory.js';
import { GrantTable, writeGrant } from './grants.js';
import { loadPrivateKey } from './keys.js';
import { policyDefaults } from './policy.js';
import { knockMapOptions } from './prefilter.js';
import { ReplayMemory } from './replay.js';

/**
 * The maps of one interface served that the service writes: its allowlist, its replay memory, its
 * flow table (a revoked client's flows without an established socket end with it), and the
 * accepted knocks' tags (XDP drops their repeats).
 */
export interface KnockServiceMaps { spak_allow: BpfMap; spak_knock_nonces: BpfMap; spak_flows?: BpfMap; spak_knock_accepted?: BpfMap }

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
  /**
   * The XDP side of the clients, for the knock maps' writer (SpakServer.setKnock): called at start
   * and whenever the directory changes (a removed client's next knock then dies in XDP), and with
   * undefined when the socket cannot be bound, so XDP never passes knocks to a closed port.
   */
  onClients(knock: KnockMapOptions | undefined): void;
}

/** A log that may hold lines back (counting them) and reports what it held on flush(). */
export interface KnockDecisionLog {
  write(level: 'info' | 'warn', obj: object, msg: string, kind: string): unknown;
  flush(): void;
}

export const DEFAULT_STATE_ROOT = '/var/lib/spak';

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

/** What the knock maps hold for these clients. */
const clientMapOptions = (cfg: KnockConfig, serverKey: KeyObject, clients: Iterable<LoadedClient>): KnockMapOptions =>
  knockMapOptions({ port: cfg.port, clients: [...clients].map((c) => c.publicKey), serverKey, rate: cfg.rate, burst: cfg.burst });

/**
 * The XDP side of knock mode from the config, with the clients the directory holds now: for
 * SpakServer's `knock` option, so the program is swapped in with the knock port already on.
 * The service's onClients then keeps it current.
 */
export function knockOptionsFromConfig(cfg: KnockConfig): { maps: KnockMapOptions; serverKey: KeyObject } {
  const serverKey = loadPrivateKey(cfg.serverKeyFile);
  const { clients } = scanClientsDir(cfg.clientsDir, serverKey, policyDefaults(cfg));
  return { maps: clientMapOptions(cfg, serverKey, clients.values()), serverKey };
}

/** Starts knock mode (KnockService.start). */
export const startKnockService = (
  maps: KnockServiceMaps | KnockServiceMaps[], cfg: KnockConfig, logger: Logger, opts: KnockServiceOptions,
): Promise<KnockService> => KnockService.start(maps, cfg, logger, opts);

export class KnockService {
  // One set of maps per interface served: every grant goes to all of them.
  #maps: KnockServiceMaps[];
  readonly #ifaces: string[];
  readonly #serverKey: KeyObject;
  readonly #replay: ReplayMemory;
  #nonceTables: NonceTable[];
  readonly #coldStart: boolean;
  readonly #grants: GrantTable;
  readonly #dir: ClientsDirectory;
  readonly #opener: KnockOpener;
  readonly #tally = new KnockTally();
  readonly #rescanMs: number;
  // The addresses knocks may name: configured ones, the listen address and the interfaces' own.
  #serverAddrs = new Set<string>();
  #sockets: Socket[] = [];
  // The last allowlist shortfall warned about (0: none), so one directory change warns once.
  #shortfall = 0;
  #housekeeping: NodeJS.Timeout | null = null;

  /**
   * Opens the replay store and the grant record, starts watching the clients directory, hands the
   * clients to onClients, binds the knock socket and keeps all of it current until stop().
   */
  static async start(maps: KnockServiceMaps | KnockServiceMaps[], cfg: KnockConfig, logger: Logger, opts: KnockServiceOptions): Promise<KnockService> {
    const svc = new KnockService(maps, cfg, logger, opts);
    // After a cold start the fence is this second: a knock stamped in it would be refused, so the
    // socket opens in the next one (at most a second later; warm starts do not wait).
    const wait = svc.#coldStart ? (svc.#replay.fence + 1) * 1000 - Date.now() : 0;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 1000)));
    await svc.#bind();
    svc.#startHousekeeping();
    return svc;
  }

  private constructor(
    maps: KnockServiceMaps | KnockServiceMaps[],
    private readonly cfg: KnockConfig,
    private readonly logger: Logger,
    private readonly opts: KnockServiceOptions,
  ) {
    this.#maps = Array.isArray(maps) ? maps : [maps];
    if (this.#maps.length === 0) throw new Error('knock: no maps to serve');
    this.#nonceTables = this.#maps.map((m) => nonceTable(m.spak_knock_nonces));
    this.#ifaces = opts.iface === undefined ? [] : Array.isArray(opts.iface) ? opts.iface : [opts.iface];
    this.#rescanMs = opts.rescanMs ?? 5000;
    this.#serverKey = loadPrivateKey(cfg.serverKeyFile);
    const stateDir = cfg.stateDir ?? (this.#ifaces[0] !== undefined ? path.join(DEFAULT_STATE_ROOT, this.#ifaces[0]) : undefined);
    if (stateDir === undefined) throw new Error('knock: give stateDir (where the grant record survives restarts)');
    const startS = Math.floor(Date.now() / 1000);
    const opened = ReplayMemory.open(() => this.#nonceTables, cfg.windowSeconds, startS);
    this.#replay = opened.memory;
    this.#coldStart = opened.cold !== null;
    if (opened.cold !== null)
      logger.warn({ fence: opened.memory.fence, why: opened.cold },
        `knock: no replay memory from an earlier daemon (${opened.cold}): every knock stamped at or before ${new Date(opened.memory.fence * 1000).toISOString()} is refused (start fence)`);
    else if (opened.memory.fence > startS)
      logger.warn({ fence: opened.memory.fence },
        `knock: the replay memory's fence is ${opened.memory.fence - startS} s ahead of the clock (it went back?): knocks stamped before ${new Date(opened.memory.fence * 1000).toISOString()} are refused (before_fence)`);
    // The replay file of earlier versions: the pinned map and the fence replace it.
    try {
      rmSync(path.join(stateDir, 'knock-replay'), { force: true });
    } catch {
      // not ours to worry about: nothing reads it any more
    }
    this.#grants = GrantTable.open(path.join(stateDir, 'knock-grants'), () => this.#maps.map((m) => m.spak_allow));
    this.#dir = new ClientsDirectory(cfg.clientsDir, this.#serverKey, policyDefaults(cfg), (c, now) => this.#changed(c, now),
      (line) => logger.warn(`knock: ${line}`), this.#rescanMs);
    this.#opener = new KnockOpener(this.#serverKey, (id) => this.#dir.current.get(id));
  }

  async #bind(): Promise<void> {
    this.#refreshAddrs();
    this.#dir.start();
    this.#checkCapacity(this.#dir.current.values());
    try {
      this.opts.onClients(clientMapOptions(this.cfg, this.#serverKey, this.#dir.current.values()));
      this.#sockets = await bindSockets(this.cfg.port, this.cfg.listenAddress, (m, r) => void this.#handle(m, r).catch(() => undefined));
    } catch (err) {
      this.#dir.stop();
      this.#grants.close();
      try {
        this.opts.onClients(undefined); // no socket: XDP must not pass knocks to a closed port
      } catch {
        // the error that matters is the one thrown below
      }
      throw err;
    }
    if (this.#serverAddrs.size === 0) this.logger.warn('knock: no server addresses (no serverAddresses, no interface addresses): every knock is wrong_server');
  }

  #startHousekeeping(): void {
    // Pruning walks the whole replay memory: once per window is enough to bound its size (a full one prunes at once).
    const pruneEvery = Math.max(1, Math.ceil((this.cfg.windowSeconds * 1000) / this.#rescanMs));
    let ticks = 0;
    this.#housekeeping = setInterval(() => {
      try {
        this.#refreshAddrs();
        this.#grants.prune(process.hrtime.bigint());
        if (++ticks % pruneEvery === 0) this.#replay.prune(Math.floor(Date.now() / 1000));
        this.opts.decisions.flush();
      } catch (err) {
        this.logger.error({ err }, 'knock: housekeeping failed');
      }
    }, this.#rescanMs);
    this.#housekeeping.unref();
  }

  stop(): void {
    if (this.#housekeeping) clearInterval(this.#housekeeping);
    this.#dir.stop();
    for (const s of this.#sockets) s.close();
    this.opts.decisions.flush();
    this.#grants.close();
  }

  counters(): KnockCounters {
    return this.#tally.counters();
  }

  /** Knocks by client name (UNKNOWN_CLIENT when none was identified) and result, since the service started. */
  clientCounters(): KnockClientCount[] {
    return this.#tally.clientCounters();
  }

  /** The bound sockets' addresses (tests use the port when the config asks for port 0). */
  addresses(): { address: string; port: number }[] {
    return this.#sockets.map((s) => ({ address: s.address().address, port: s.address().port }));
  }

  /** Rescans the clients directory now (SIGHUP, tests). */
  rescan(): void {
    this.#dir.rescan();
  }

  /**
   * After a reload swapped in new programs: the allowlists to write from now on (the same state
   * maps, through the new programs). Hands the clients to onClients again at once, so the new
   * programs' client maps hold what the directory holds now.
   */
  setMaps(next: KnockServiceMaps | KnockServiceMaps[]): void {
    const list = Array.isArray(next) ? next : [next];
    if (list.length === 0) throw new Error('knock: no maps to serve');
    this.#maps = list;
    this.#nonceTables = list.map((m) => nonceTable(m.spak_knock_nonces));
    this.opts.onClients(clientMapOptions(this.cfg, this.#serverKey, this.#dir.current.values()));
  }

  #changed(c: ClientsChange, now: Map<number, LoadedClient>): void {
    try {
      this.opts.onClients(clientMapOptions(this.cfg, this.#serverKey, now.values())); // a removed client's next knock dies in XDP
    } catch (err) {
      this.logger.error({ err }, 'knock: writing the XDP client map failed');
    }
    this.#checkCapacity(now.values());
    for (const x of c.added) this.logger.info({ client: x.name, file: x.pubFile }, `knock: client ${x.name} added`);
    for (const x of c.changed) this.logger.info({ client: x.name, file: x.pubFile }, `knock: client ${x.name} reloaded`);
    for (const x of c.removed) {
      let n = 0;
      let flows = 0;
      try {
        const held = this.#grants.addressesOf(x.id);
        n = this.#grants.revokeClient(x.id);
        const addrs = held.filter((a) => !this.#grants.held(a)); // another client's grant there keeps its flows
        for (const m of this.#maps) if (m.spak_flows) flows += endFlowsFrom(m.spak_flows, addrs);
      } catch (err) {
        this.logger.error({ err, client: x.name }, 'knock: revoking allowlist entries or flows failed');
      }
      this.logger.info({ client: x.name, revokedEntries: n, endedFlows: flows },
        `knock: client ${x.name} removed; ${n} allowlist entr${n === 1 ? 'y' : 'ies'} revoked, ${flows} flow${flows === 1 ? '' : 's'} ended`);
    }
  }

  /**
   * The reserve: when the allowlist holds every client's maxAddresses times its allowed ports, no
   * client under its limit can find it full. Says so in one line when it does not.
   */
  #checkCapacity(clients: Iterable<LoadedClient>): void {
    let need = 0;
    for (const c of clients) need += c.policy.maxAddresses * new Set(c.policy.allow.map((a) => `${a.proto}/${a.port}`)).size;
    const capacity = Math.min(...this.#maps.map((m) => m.spak_allow.maxEntries));
    const shortfall = need > capacity ? need : 0;
    if (shortfall !== 0 && shortfall !== this.#shortfall)
      this.logger.warn(`knock: allowCapacity ${capacity} is below the clients' maxAddresses x allowed ports (${need}): a full allowlist evicts the oldest address of the client holding the most`);
    this.#shortfall = shortfall;
  }

  #refreshAddrs(): void {
    const all = networkInterfaces();
    const cfg = this.cfg;
    this.#serverAddrs = addressSet([
      ...cfg.serverAddresses, ...(cfg.listenAddress ? [cfg.listenAddress] : []), ...this.#ifaces.flatMap((i) => (all[i] ?? []).map((a) => a.address)),
    ]);
  }

  async #handle(msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    let src = rinfo.address;
    let client: LoadedClient | null = null;
    try {
      src = normalize(rinfo.address);
      const opened = await this.#opener.open(msg);
      if (!opened.ok) return this.#rejected(opened.reason, src, null, opened.detail);
      client = opened.client as LoadedClient;
      const d = decideKnock({
        plain: opened.plain, client, revoked: this.#dir.current.get(client.id) !== client, src, // revoked while HPKE ran
        nowS: Math.floor(Date.now() / 1000), monoNs: process.hrtime.bigint(), windowS: this.cfg.windowSeconds,
        serverAddrs: this.#serverAddrs, replay: this.#replay,
      });
      if (!d.ok) return this.#rejected(d.reason, src, client, d.detail);
      this.#makeRoom(client, d.grant.addr);
      try {
        this.#write(client, d.grant);
      } catch (err) {
        return this.#rejected('allowlist_failed', src, client, (err as Error).message);
      }
      for (const m of this.#maps) if (m.spak_knock_accepted) try { markKnockAccepted({ spak_knock_accepted: m.spak_knock_accepted }, msg); } catch { /* its repeats reach the replay cache */ }
      this.#accepted(src, client, d.grant);
    } catch (err) {
      this.#rejected('internal_error', src, client, (err as Error)?.message ?? String(err));
    }
  }

  /**
   * A client holds at most its policy's maxAddresses addresses: a knock for one more first revokes
   * the entries of its oldest (counted as knock_client_address_replaced when any were live).
   */
  #makeRoom(client: LoadedClient, addr: string): void {
    const held = this.#grants.addressesOf(client.id).filter((a) => a !== addr);
    for (const old of held.slice(0, Math.max(0, held.length - client.policy.maxAddresses + 1))) {
      if (this.#grants.revokeAddress(client.id, old) === 0) continue; // its entries had gone already
      this.#tally.event('knock_client_address_replaced');
      this.opts.decisions.write('info', { client: client.name, addr: old }, `knock: client ${client.name} holds ${client.policy.maxAddresses} addresses: its oldest, ${old}, replaced`,
        'knock_client_address_replaced');
    }
  }

  /**
   * Writes the grant. When the allowlist is full, the client holding the most addresses (more than
   * this one will) gives up its oldest, and the write is tried again: a full table never refuses a
   * client that holds fewer addresses than every other (counted as knock_client_address_evicted).
   */
  #write(client: LoadedClient, g: KnockGrant): void {
    const maps = this.#maps.map((m) => m.spak_allow);
    for (let attempt = 0; ; attempt++) {
      try {
        return writeGrant(maps, g);
      } catch (err) {
        const mine = this.#grants.addressesOf(client.id).filter((a) => a !== g.addr).length + 1;
        let victim: number | null = null;
        let most = mine;
        for (const [id, n] of this.#grants.addressCounts()) if (id !== client.id && n > most) [victim, most] = [id, n];
        // Only a full map (E2BIG from a hash map at max_entries) is made room in.
        if ((err as { code?: string }).code !== 'E2BIG' || victim === null || attempt >= 256) throw err; // a record whose entry already went frees nothing: try the next
        const old = this.#grants.addressesOf(victim)[0]!;
        if (this.#grants.revokeAddress(victim, old) > 0) this.#tally.event('knock_client_address_evicted');
      }
    }
  }

  #accepted(src: string, client: LoadedClient, g: KnockGrant): void {
    try {
      for (const a of g.open) this.#grants.add({ addr: g.addr, proto: a.proto, port: a.port }, client.id, g.expiresNs);
    } catch (err) {
      // Written and in memory; only a revocation after a restart would miss it.
      this.logger.error({ err, client: client.name }, 'knock: saving the grant record failed');
    }
    this.#tally.count(client.name, 'accepted');
    const opens = g.open.map((a) => `${a.proto}/${a.port}`).join(',');
    this.opts.decisions.write('info', { client: client.name, src, addr: g.addr, open: opens, durationS: g.durationS },
      `knock: client ${client.name} from ${src}: ${g.addr} may open ${opens} for ${g.durationS} s`, 'knock_accepted');
  }

  #rejected(reason: KnockRejectReason, src: string, client: LoadedClient | null, detail?: string): void {
    this.#tally.count(client?.name ?? null, reason);
    this.opts.decisions.write('warn', { reason, src, ...(client ? { client: client.name } : {}), ...(detail ? { detail } : {}) },
      `knock from ${src}${client ? ` (client ${client.name})` : ''} rejected: ${reason}${detail ? `: ${detail}` : ''}`, 'knock_rejected');
  }
}
