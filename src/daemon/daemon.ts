// The `spak server` runtime: one SpakServer per interface, all configured from one config, the
// knock receiver writing to every interface's maps, SIGHUP reload, and the privilege drop after
// everything is attached and bound. The CLI parses, plan.ts reads the config into a plan; this runs it.
import type { Logger } from 'pino';
import { formatCounters } from '../bpf/counters.js';
import type { ConfigPath } from '../config/load.js';
import { makeDirectory } from '../config/dirs.js';
import { startKnockService, type KnockService, type KnockServiceMaps } from '../knock/service.js';
import { ALL_ADDRESSES } from '../server/destinations.js';
import { ROOT_OWNED_PINS } from '../server/maps.js';
import { checkCanDrop, dropPrivileges, handOver, type Account, type CapName } from './privdrop.js';
import { planFromConfig, reloadable, restartNeeded, stateDirOf, type DaemonInterface, type DaemonOverrides, type DaemonPlan } from './plan.js';

export { allAddresses, planFromConfig, planFromServerConfig, type DaemonInterface, type DaemonOverrides, type DaemonPlan } from './plan.js';
import { scopeWarnings } from '../server/scope.js';
import { decisionLog, knockLog, plain } from '../observe/log.js';
import type { MetricsEndpoint } from '../observe/metrics.js';
import { startDaemonMetrics, type MetricsSetting } from '../observe/setup.js';
import { runForeground } from './foreground.js';
import { notify } from './notify.js';
import { startControl, type ControlServer, type ReloadOutcome } from './control.js';
import { checkConfig, SpakServer, type Checked, type ReloadableOptions, type ServerOptions, type StartedServer } from '../server/server.js';
import { hostPort } from '../wire/address.js';

/**
 * Capabilities kept after the privilege drop, found by trial on kernel 6.18 (reload as the
 * test's unprivileged user): without CAP_PERFMON the verifier refuses the reload program
 * (EACCES), without CAP_NET_ADMIN the kernel refuses to load an XDP program (EPERM), and every
 * bpf() command, map reads and writes on held fds included, needs CAP_BPF while unprivileged
 * BPF is disabled. The swap itself names the old program by an fd the daemon holds, because
 * looking it up by id (BPF_PROG_GET_FD_BY_ID) would take CAP_SYS_ADMIN.
 */
export const KEPT_CAPABILITIES: readonly CapName[] = ['BPF', 'NET_ADMIN', 'PERFMON'];

export interface DaemonOptions {
  logger: Logger;
  bpffs: string;
  /** The configuration SIGHUP reads again; without one there is nothing to reload. */
  config?: ConfigPath | undefined;
  overrides?: DaemonOverrides | undefined;
  /** The Prometheus endpoint (src/observe), bound before the privilege drop; null or absent: none. */
  metrics?: MetricsSetting | null | undefined;
}

export class SpakDaemon {
  #plan: DaemonPlan;
  #opts: DaemonOptions;
  #servers: SpakServer[];
  #started: StartedServer[];
  #knock: KnockService | null;
  #dropped: string | null = null;
  #metrics: MetricsEndpoint | null = null;
  #control: ControlServer | null = null;
  /** How a control-socket request reaches the reload of run() (coalesced with SIGHUPs); null before run(). */
  #requestReload: (() => Promise<ReloadOutcome>) | null = null;
  #stopped = false;

  private constructor(plan: DaemonPlan, opts: DaemonOptions, servers: SpakServer[], started: StartedServer[], knock: KnockService | null) {
    this.#plan = plan;
    this.#opts = opts;
    this.#servers = servers;
    this.#started = started;
    this.#knock = knock;
  }

  /**
   * Every interface attached (or adopted), all or nothing: when one fails, what this start attached
   * is detached again (what an earlier daemon left in force stays in force) and the error is thrown.
   * Then the knock socket, the metrics endpoint and the privilege drop (what the drop needs is
   * checked before the first attach). Should one of those fail, nothing is detached: protection
   * stays pinned and in force, as a SIGTERM leaves it, and the error says so.
   */
  static async start(plan: DaemonPlan, opts: DaemonOptions): Promise<SpakDaemon> {
    // Directories first: one that cannot be made stops the start before anything is attached.
    if (plan.knockConfig) makeDirectory(stateDirOf(plan), 'state directory');
    if (plan.account) {
      checkCanDrop(plan.account, KEPT_CAPABILITIES);
      // The state directory exists already: it is handed over now, so a chown refused there stops the start here.
      if (plan.knockConfig) handOver(stateDirOf(plan), plan.account, new Set(), 'the knock state directory');
    }
    const servers = plan.interfaces.map((i) => new SpakServer(serverOptions(plan, i, opts)));
    const running: SpakServer[] = [];
    const started: StartedServer[] = [];
    try {
      for (const [n, s] of servers.entries()) {
        try {
          started.push(s.start());
        } catch (err) {
          throw new Error(plan.interfaces.length > 1 ? `${plan.interfaces[n]!.name}: ${(err as Error).message}` : (err as Error).message);
        }
        running.push(s);
      }
    } catch (err) {
      for (const s of running.reverse()) {
        try {
          s.abandon();
        } catch (e) {
          opts.logger.error({ err: e }, 'undoing a start failed');
        }
      }
      throw err;
    }
    // Protection has started: from here on a failure leaves it in force; only this process goes.
    const daemon = new SpakDaemon(plan, opts, servers, started, null);
    try {
      if (plan.knockConfig)
        daemon.#knock = await startKnockService(knockMaps(servers), plan.knockConfig, opts.logger, {
          iface: plan.interfaces.map((i) => i.name), decisions: knockLog(opts.logger),
          onClients: (k) => { for (const s of servers) s.setKnock(k); }, // the servers write their knock maps
        });
      // The metrics port is bound before the privilege drop; the sources are read at scrape time,
      // so after a reload they are the new programs' maps.
      // A unix socket goes to the service account's group (metrics.mode says whether it may read).
      const metrics = opts.metrics && plan.account ? { ...opts.metrics, socketGid: plan.account.gid } : opts.metrics ?? null;
      daemon.#metrics = await startDaemonMetrics(metrics, {
        servers: () => daemon.#servers.map((server, i) => ({
          iface: daemon.#started[i]!.ifname, enforcement: hookOf(daemon.#started[i]!), server,
        })),
        knock: () => daemon.#knock,
      }, opts.logger);
      // The control socket (`spak server reload`) is bound as root, before the drop, like the metrics port.
      if (opts.config !== undefined) {
        const served = plan.interfaces.map((i) => i.name).join(',');
        daemon.#control = await startControl(plan.interfaces.map((i) => i.name), () =>
          daemon.#requestReload ? daemon.#requestReload() : Promise.resolve({ ok: false, message: 'the daemon is still starting' }), served);
      }
      if (plan.account) daemon.#dropPrivileges(plan.account);
    } catch (err) {
      daemon.stop();
      const ifs = plan.interfaces.map((i) => i.name);
      throw new Error(`${(err as Error).message}; protection stays in force on ${ifs.join(', ')} (pinned, as after a stop): ` +
        `fix that and start again (the next start adopts it), or \`${ifs.map((i) => `spak server stop ${i}`).join('; ')}\` removes it`);
    }
    return daemon;
  }

  /** Hands what the daemon writes later to the user, then becomes it. */
  #dropPrivileges(to: Account): void {
    const rootOwned = new Set<string>(ROOT_OWNED_PINS); // the knock replay memory: not the user's to touch
    for (const s of this.#servers) {
      if (!s.pinDir) continue;
      // Opened (and listed, in handOver) before the directory changes hands: once it is the user's,
      // root without CAP_DAC_OVERRIDE could not read it.
      s.keepPinDirOpen();
      handOver(s.pinDir, to, rootOwned, 'the pin directory'); // reload re-pins the configuration maps here
    }
    if (this.#plan.knockConfig) handOver(stateDirOf(this.#plan), to, new Set(), 'the knock state directory');
    dropPrivileges(to, KEPT_CAPABILITIES);
    this.#dropped = `${to.label} (uid ${to.uid}, gid ${to.gid}); capabilities kept: ${KEPT_CAPABILITIES.map((c) => c.toLowerCase()).join(', ')}`;
  }

  /**
   * SIGHUP: reads the config file and everything it names again, checks all of it, then swaps
   * a freshly configured program in on every interface (state maps shared: no connection lost)
   * and rescans the knock clients. A bad config changes nothing. Returns a summary line. The
   * programs load on a worker thread (knocks and signals are served meanwhile); a stop during the
   * load abandons the reload: nothing is swapped.
   */
  async reload(): Promise<string> {
    const where = this.#opts.config;
    if (where === undefined) throw new Error('started without --config: nothing to reload');
    const file = where.file;
    const next = planFromConfig(where, this.#opts.overrides);
    const why = restartNeeded(this.#plan, next);
    if (why) throw new Error(`${why}: restart needed`);
    const update = checkConfig(reloadable(next)); // the one check: every interface gets the same configuration
    const done: [SpakServer, Checked<ReloadableOptions>][] = [];
    const swaps: string[] = [];
    try {
      for (const [n, s] of this.#servers.entries()) {
        const prev = s.options;
        const r = await s.reload(update, { onMainThread: this.#dropped !== null }); // see ReloadHow
        done.push([s, prev]);
        swaps.push(`${next.interfaces[n]!.name} program ${r.oldProgId} -> ${r.newProgId}`);
      }
    } catch (err) {
      if (this.#stopped) throw err; // the daemon went meanwhile: nothing to restore on
      // Interfaces already swapped go back to the old configuration (with the same mechanism).
      for (const [s, prev] of done) {
        try {
          await s.reload(prev, { onMainThread: this.#dropped !== null });
        } catch (e) {
          this.#opts.logger.error({ err: e }, 'restoring the old configuration failed');
        }
      }
      throw err;
    }
    this.#plan = next;
    if (this.#knock) {
      this.#knock.setMaps(knockMaps(this.#servers));
      this.#knock.rescan();
    }
    const s = next.server;
    return `reloaded ${file}: key ids ${s.keys.map((k) => k.id).join(',')}; ${s.protect.length} destination(s); ${swaps.join(', ')}`;
  }

  /** The daemon goes; protection stays in force (the pinned links keep it). */
  stop(): void {
    this.#stopped = true;
    notify('STOPPING=1');
    this.#control?.close();
    this.#control = null;
    void this.#metrics?.close();
    this.#metrics = null;
    this.#knock?.stop();
    this.#knock = null;
    for (const s of this.#servers) s.stop();
  }

  /** Verdict counters summed over the interfaces, with the knock counters. */
  counters(): Record<string, bigint> {
    const sum: Record<string, bigint> = {};
    for (const s of this.#servers) for (const [k, v] of Object.entries(s.counters())) sum[k] = (sum[k] ?? 0n) + v;
    for (const [k, v] of Object.entries(this.#knock?.counters() ?? {})) sum[k] = BigInt(v);
    return sum;
  }

  /** What the daemon says once it runs: one line per interface, then the knock port and the user. */
  banner(): string[] {
    const s = this.#plan.server;
    const dests = s.protect.map((d) => `${d.address === ALL_ADDRESSES ? '*' : hostPort(d.address, d.port).replace(/:\d+$/, '')}:${d.port}${d.bindSource ? ' (source-bound)' : ''}`).join(', ');
    const lines = this.#started.map((info) => {
      const how = info.adopted
        ? `adopted on ${info.ifname} (ifindex ${info.ifindex}); replaced program id ${info.adopted.oldProgId} with ${info.adopted.newProgId}`
        : `attached to ${info.ifname} (ifindex ${info.ifindex})`;
      return `spak server: ${hookOf(info).text} ${how}; protecting ${dests}; key ids ${s.keys.map((k) => k.id).join(',')}; ` +
        `step ${s.stepSeconds}s +-${s.stepWindow}; ${info.seededFlows} existing connection(s) kept; pinned at ${info.pinDir}`;
    });
    if (this.#metrics) lines.push(`spak server: metrics on ${this.#metrics.url}`);
    if (this.#knock) lines.push(`spak server: knock port ${this.#knock.addresses().map((a) => hostPort(a.address, a.port)).join(', ')}`);
    if (this.#dropped) lines.push(`spak server: running as ${this.#dropped}`);
    return lines;
  }

  warnings(): string[] {
    return scopeWarnings(this.#plan.server.protect);
  }

  get interfaces(): string[] {
    return this.#plan.interfaces.map((i) => i.name);
  }

  /**
   * Runs until SIGINT/SIGTERM: SIGHUP reloads, SIGUSR1 prints the counters. The banner prints
   * once the handlers are in place, so whoever waits for it can signal at once.
   */
  run(statsInterval: number): Promise<void> {
    const decisions = decisionLog(this.#opts.logger);
    return runForeground({
      stop: () => this.stop(),
      report: () => `spak server counters:\n${formatCounters(this.counters())}`,
      statsInterval,
      farewell: (signal, reloading) => {
        const how = this.interfaces.map((i) => `spak server stop ${i}`).join(', ');
        const abandoned = reloading ? '; the reload in progress is abandoned (nothing swapped)' : '';
        return `spak server: ${signal}: exiting${abandoned}; protection stays in force on ${this.interfaces.join(', ')} (${how} removes it)`;
      },
      reload: async (): Promise<ReloadOutcome> => {
        // One line either way; a rejected reload changes nothing and the daemon runs on. One
        // abandoned by a stop says nothing: the farewell is the last line.
        try {
          const what = await this.reload();
          plain(1, 'info', `spak server: ${what}`);
          decisions.write('info', { event: 'reload' }, what, 'reload');
          return { ok: true, message: what };
        } catch (err) {
          const reason = (err as Error).message;
          if (this.#stopped) return { ok: false, message: `abandoned: the daemon is stopping (${reason})` };
          plain(2, 'error', `spak server: reload rejected, the old configuration stays in force: ${reason}`);
          decisions.write('error', { event: 'reload-rejected', reason }, 'reload rejected, the old configuration stays in force', 'reload-rejected');
          return { ok: false, message: `reload rejected, the old configuration stays in force: ${reason}` };
        }
      },
      control: (request) => {
        this.#requestReload = request;
      },
      started: () => {
        plain(1, 'info', this.banner().join('\n'));
        for (const info of this.#started) {
          const event = info.adopted ? 'adopt' : 'attach';
          const hook = hookOf(info);
          decisions.write('info', { event, iface: info.ifname, hook: hook.hook, mode: hook.mode, ...info.adopted },
            `${info.adopted ? 'adopted' : 'attached'} ${hook.text} on ${info.ifname}`, event);
        }
        for (const w of this.warnings()) plain(2, 'warn', `spak: warning: ${w}`);
        // Type=notify: `systemctl start` returns now, everything attached, bound and dropped.
        notify(`READY=1\nSTATUS=protecting ${this.interfaces.join(', ')}`);
      },
    });
  }
}

/** The hook as `spak status` and the metrics name it (xdp, tcx); a mode only for XDP. */
function hookOf(info: StartedServer): { hook: string; mode: string; text: string } {
  return info.enforcement === 'tc'
    ? { hook: 'tcx', mode: '', text: 'TC ingress' }
    : { hook: 'xdp', mode: info.mode, text: `XDP (${info.mode})` };
}

function serverOptions(plan: DaemonPlan, i: DaemonInterface, o: DaemonOptions): ServerOptions {
  return {
    ...plan.server, iface: i.name, xdpMode: i.xdpMode, logger: o.logger, bpffs: o.bpffs,
    ...(i.enforcement !== undefined ? { enforcement: i.enforcement } : {}),
  };
}

function knockMaps(servers: SpakServer[]): KnockServiceMaps[] {
  return servers.map((s) => ({
    spak_allow: s.map('spak_allow'), spak_knock_nonces: s.map('spak_knock_nonces'), spak_flows: s.map('spak_flows'),
    spak_knock_accepted: s.map('spak_knock_accepted'),
  }));
}
