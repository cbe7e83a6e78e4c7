// A throw-away LAN of network namespaces for the e2e tests, the demo and the benchmark.
//
//   <prefix>-lan   holds bridge br0
//   <prefix>-<h>   one per host: eth0 (veth, peer "<h>-p" on br0), 198.51.100.x/24 and 2001:db8::x/64
//
// Only documentation addresses (198.51.100.0/24, 2001:db8::/32), only inside namespaces made here.
// Every lab is registered (cleanup.ts): process 'exit', SIGINT, SIGTERM and SIGHUP remove them all,
// with every process inside them. Nothing is ever attached to the host's own interfaces.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as traffic from './traffic.js';
import { netnsInode, registerLab, removeSpakPins, unregisterLab } from './cleanup.js';
import type { Counters } from './counters.js';
import {
  describeArgv, LabProcess, REPO_ROOT, run, runSync, sleepSync, SPAK_BIN, V4_PREFIX, V6_PREFIX, type ExecOptions, type ExecResult,
} from './process.js';

export interface LabHost {
  name: string;
  ns: string;
  v4: string;
  v6: string;
  ifname: 'eth0';
}

export interface LabOptions {
  /** Shown in namespace names: spak-<pid>-<tag>-<host>. Default: a counter. */
  tag?: string;
}

let labCounter = 0;

export class Lab {
  readonly prefix: string;
  readonly lanNs: string;
  readonly hosts = new Map<string, LabHost>();
  /** A temp directory for configs and captures, removed with the lab. */
  readonly dir: string;
  /** Namespaces this lab made (and so may delete), in creation order. */
  #namespaces: string[] = [];
  #destroyed = false;
  #procs = new Set<LabProcess>();

  private constructor(opts: LabOptions) {
    labCounter++;
    this.prefix = `spak-${process.pid}-${opts.tag ?? String(labCounter)}`;
    this.lanNs = `${this.prefix}-lan`;
    this.dir = mkdtempSync(path.join(tmpdir(), `${this.prefix}-`));
    registerLab(this);
  }

  /** Makes the LAN (bridge namespace and br0). Add hosts with addHost. */
  static async create(opts: LabOptions = {}): Promise<Lab> {
    if (typeof process.geteuid === 'function' && process.geteuid() !== 0)
      throw new Error('the lab needs root (network namespaces, veth, XDP)');
    const lab = new Lab(opts);
    try {
      await lab.#ip(['netns', 'add', lab.lanNs]);
      lab.#namespaces.push(lab.lanNs);
      await lab.#ip(['-n', lab.lanNs, 'link', 'add', 'br0', 'type', 'bridge']);
      await lab.#ip(['-n', lab.lanNs, 'link', 'set', 'br0', 'up']);
      await lab.#ip(['-n', lab.lanNs, 'link', 'set', 'lo', 'up']);
    } catch (err) {
      lab.destroySync();
      throw err;
    }
    return lab;
  }

  #ip(args: string[]): Promise<ExecResult> {
    return run(['ip', ...args], { check: true, timeoutMs: 10_000 });
  }

  /** A host with eth0 on the bridge, 198.51.100.<v4last>/24 and 2001:db8::<v6last>/64 (nodad). */
  async addHost(name: string, v4last: number, v6last: number | string = v4last): Promise<LabHost> {
    if (this.#destroyed) throw new Error('lab destroyed');
    if (!/^[a-z][a-z0-9]{0,12}$/.test(name)) throw new Error(`host name "${name}": 1-13 of [a-z0-9], a letter first`);
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`);
    if (!Number.isInteger(v4last) || v4last < 1 || v4last > 254) throw new Error(`bad v4last ${v4last}`);
    const host: LabHost = {
      name,
      ns: `${this.prefix}-${name}`,
      v4: `${V4_PREFIX}${v4last}`,
      v6: `${V6_PREFIX}${typeof v6last === 'number' ? v6last.toString(16) : v6last}`,
      ifname: 'eth0',
    };
    this.hosts.set(name, host);
    const peer = `${name}-p`;
    await this.#ip(['netns', 'add', host.ns]);
    this.#namespaces.push(host.ns);
    await this.#ip(['-n', this.lanNs, 'link', 'add', peer, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns]);
    await this.#ip(['-n', this.lanNs, 'link', 'set', peer, 'master', 'br0']);
    await this.#ip(['-n', this.lanNs, 'link', 'set', peer, 'up']);
    await this.#ip(['-n', host.ns, 'link', 'set', 'lo', 'up']);
    await this.#ip(['-n', host.ns, 'addr', 'add', `${host.v4}/24`, 'dev', 'eth0']);
    await this.#ip(['-n', host.ns, 'addr', 'add', `${host.v6}/64`, 'dev', 'eth0', 'nodad']);
    await this.#ip(['-n', host.ns, 'link', 'set', 'eth0', 'up']);
    return host;
  }

  /**
   * A host on a point-to-point link of its own to host `via` (no bridge): `via` gets a second
   * interface `viaIfname`. Link k (1-7) uses 198.51.100.(128+16(k-1))/28 (via .+1, host .+2) and
   * 2001:db8:k::/64 (via ::1, host ::2); on `via` the /28 is more specific than the LAN's /24.
   * The veth pair goes with the new host's namespace.
   */
  async addLinkedHost(name: string, via: string, viaIfname: string, k: number): Promise<LabHost & { viaV4: string; viaV6: string }> {
    if (this.#destroyed) throw new Error('lab destroyed');
    if (!/^[a-z][a-z0-9]{0,12}$/.test(name)) throw new Error(`host name "${name}": 1-13 of [a-z0-9], a letter first`);
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`);
    if (!Number.isInteger(k) || k < 1 || k > 7) throw new Error(`bad link number ${k}`);
    if (!/^[a-z][a-z0-9]{0,14}$/.test(viaIfname) || viaIfname === 'eth0') throw new Error(`bad interface name ${viaIfname}`);
    const gw = this.host(via);
    const base = 128 + 16 * (k - 1);
    const host: LabHost = { name, ns: `${this.prefix}-${name}`, v4: `${V4_PREFIX}${base + 2}`, v6: `2001:db8:${k}::2`, ifname: 'eth0' };
    const viaV4 = `${V4_PREFIX}${base + 1}`;
    const viaV6 = `2001:db8:${k}::1`;
    this.hosts.set(name, host);
    await this.#ip(['netns', 'add', host.ns]);
    this.#namespaces.push(host.ns);
    await this.#ip(['-n', host.ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', viaIfname, 'netns', gw.ns]);
    await this.#ip(['-n', host.ns, 'link', 'set', 'lo', 'up']);
    await this.#ip(['-n', host.ns, 'addr', 'add', `${host.v4}/28`, 'dev', 'eth0']);
    await this.#ip(['-n', host.ns, 'addr', 'add', `${host.v6}/64`, 'dev', 'eth0', 'nodad']);
    await this.#ip(['-n', host.ns, 'link', 'set', 'eth0', 'up']);
    await this.#ip(['-n', gw.ns, 'addr', 'add', `${viaV4}/28`, 'dev', viaIfname]);
    await this.#ip(['-n', gw.ns, 'addr', 'add', `${viaV6}/64`, 'dev', viaIfname, 'nodad']);
    await this.#ip(['-n', gw.ns, 'link', 'set', viaIfname, 'up']);
    return { ...host, viaV4, viaV6 };
  }

  host(name: string): LabHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name} in lab ${this.prefix}`);
    return h;
  }

  /** MAC address of a host's eth0. */
  async mac(name: string): Promise<string> {
    const r = await run(['ip', '-n', this.host(name).ns, '-j', 'link', 'show', 'eth0'], { check: true });
    const info = JSON.parse(r.stdout) as { address: string }[];
    const mac = info[0]?.address;
    if (!mac) throw new Error(`no MAC for ${name}`);
    return mac;
  }

  /** Runs argv in a host's namespace (`ip netns exec`), bounded by opts.timeoutMs. */
  exec(host: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (this.#destroyed) return Promise.reject(new Error('lab destroyed'));
    return run(['ip', 'netns', 'exec', this.host(host).ns, ...argv], opts);
  }

  /**
   * Runs argv in a host's network namespace only (`nsenter --net`), bounded by opts.timeoutMs.
   * Unlike `ip netns exec` this does not remount /sys, so bpffs pins made inside outlive the process:
   * use it for spak.
   */
  execNet(host: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (this.#destroyed) return Promise.reject(new Error('lab destroyed'));
    return run(['nsenter', `--net=/run/netns/${this.host(host).ns}`, '--', ...argv], opts);
  }

  /**
   * Starts argv in a host's namespace; stop it with handle.stop() (lab.destroy() kills it too).
   * how 'netns-exec' (default) uses `ip netns exec`; 'nsenter' enters only the network namespace
   * (spak: its bpffs pins must live on after it exits).
   */
  spawn(
    host: string,
    argv: readonly string[],
    env: Record<string, string> = {},
    name?: string,
    how: 'netns-exec' | 'nsenter' = 'netns-exec',
  ): LabProcess {
    if (this.#destroyed) throw new Error('lab destroyed');
    const ns = this.host(host).ns;
    // Both `ip netns exec` and nsenter exec the command: the child's pid is the command's, signals reach it directly.
    const prefix = how === 'nsenter' ? ['nsenter', `--net=/run/netns/${ns}`, '--'] : ['ip', 'netns', 'exec', ns];
    const child = spawn(prefix[0]!, [...prefix.slice(1), ...argv], {
      env: { ...process.env, ...env },
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const proc = new LabProcess(name ?? `${host}: ${describeArgv(argv).slice(0, 80)}`, child);
    this.#procs.add(proc);
    void proc.exited.then(() => this.#procs.delete(proc));
    return proc;
  }

  /* ---------------- spak in a host ---------------- */

  /** Runs `spak <args>` in a host (nsenter --net, as the daemons run), bounded (default 30 s). */
  spak(host: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.execNet(host, [process.execPath, SPAK_BIN, ...args], { timeoutMs: 30_000, ...opts });
  }

  /** Starts `spak <args>` in a host without waiting for anything (for starts expected to fail). */
  spawnSpak(host: string, args: readonly string[], env: Record<string, string> = {}): LabProcess {
    return this.spawn(host, [process.execPath, SPAK_BIN, ...args], env, `spak ${args[0] ?? ''} on ${host}`, 'nsenter');
  }

  /** `spak server stop <iface>` in a host: the one explicit way to remove the server's protection. */
  serverStop(host: string, iface = 'eth0'): Promise<ExecResult> {
    return this.spak(host, ['server', 'stop', iface]);
  }

  /** `spak stats <iface> --json` in a host: the pinned server counters (works with no daemon running). */
  async spakStats(host: string, iface = 'eth0'): Promise<Counters> {
    const r = await this.spak(host, ['stats', iface, '--json']);
    if (r.code !== 0) throw new Error(`spak stats ${iface} in ${host}: exit ${r.code}: ${r.stderr.trim()}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
    } catch {
      throw new Error(`spak stats ${iface} --json in ${host}: not JSON: ${r.stdout}`);
    }
    // A flat {name: value} object, or one with the counters under "counters".
    const obj = (parsed as { counters?: unknown }).counters ?? parsed;
    const out: Counters = {};
    for (const [k, v] of Object.entries(obj as Record<string, unknown>)) if (typeof v === 'number') out[k] = v;
    return out;
  }

  /**
   * Test cleanup for a host that ran spak: `spak server stop eth0`, then (for older builds and
   * SIGKILLed daemons) whatever XDP program or clsact qdisc is left on eth0. Never throws.
   */
  async cleanupSpak(host: string): Promise<void> {
    if (this.#destroyed) return;
    const ns = this.host(host).ns;
    await this.serverStop(host).catch(() => undefined);
    for (const mode of ['xdp', 'xdpgeneric', 'xdpdrv'])
      await run(['ip', '-n', ns, 'link', 'set', 'dev', 'eth0', mode, 'off'], { timeoutMs: 10_000 }).catch(() => undefined);
    await run(['tc', '-n', ns, 'qdisc', 'del', 'dev', 'eth0', 'clsact'], { timeoutMs: 10_000 }).catch(() => undefined);
  }

  /** Writes a file in the lab's temp directory; returns its path. */
  writeFile(name: string, content: string): string {
    const file = path.join(this.dir, name);
    writeFileSync(file, content, { mode: 0o600 });
    return file;
  }

  /** Removes every process and namespace of the lab. Idempotent. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    // Be polite first: spak prints its counters on SIGTERM (its pinned state is removed in destroySync).
    await Promise.all([...this.#procs].map((p) => p.stop(2_000).catch(() => undefined)));
    this.destroySync();
  }

  /** Synchronous teardown, for exit and signal handlers. Idempotent. */
  destroySync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    unregisterLab(this);
    // Hosts first, the bridge last: deleting a host's namespace deletes its veth pair.
    const namespaces = [...this.#namespaces].reverse();
    if (namespaces.length > 0) {
      const pidsOf = (ns: string): number[] =>
        runSync(['ip', 'netns', 'pids', ns])
          .stdout.split(/\s+/)
          .filter((s) => /^\d+$/.test(s))
          .map(Number)
          .filter((pid) => pid !== process.pid);
      const killAll = (sig: NodeJS.Signals): number => {
        let n = 0;
        for (const ns of namespaces)
          for (const pid of pidsOf(ns)) {
            n++;
            try {
              process.kill(pid, sig);
            } catch {
              // already gone
            }
          }
        return n;
      };
      const remaining = (): number => namespaces.reduce((n, ns) => n + pidsOf(ns).length, 0);
      if (killAll('SIGTERM') > 0) {
        // Up to 3 s for a graceful exit (spak detaches its programs), then SIGKILL.
        for (let i = 0; i < 30 && remaining() > 0; i++) sleepSync(100);
        for (let i = 0; i < 30 && killAll('SIGKILL') > 0; i++) sleepSync(100);
      }
      for (const ns of namespaces) {
        const inode = netnsInode(ns);
        runSync(['ip', 'netns', 'del', ns]);
        if (inode !== null) removeSpakPins(inode);
      }
    }
    for (const p of this.#procs) if (p.running) p.child.kill('SIGKILL');
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  /* ---------------- traffic (traffic.ts) ---------------- */

  /** Waits until something listens on addr:port in a host (polls `ss`). */
  waitListening(host: string, addr: string, port: number, timeoutMs = 10_000): Promise<void> {
    return traffic.waitListening(this, host, addr, port, timeoutMs);
  }

  /** A real TCP service on addr:port in a host ('http', 'echo' or 'banner'), returned once it listens. */
  startService(host: string, addr: string, port: number, kind: 'http' | 'echo' | 'banner' = 'http', page = 'spak-demo-ok\n'): Promise<LabProcess> {
    return traffic.startService(this, host, addr, port, kind, page);
  }

  /** connect() only, from a host to addr:port, bounded: {ok: true} once connected, else the error. */
  tcpConnect(host: string, addr: string, port: number, timeoutMs = 2_000): Promise<{ ok: boolean; error?: string }> {
    return traffic.tcpConnect(this, host, addr, port, timeoutMs);
  }

  /** Connects, optionally sends `send`, reads until the peer closes: {ok, data, error}. Bounded. */
  tcpFetch(host: string, addr: string, port: number, timeoutMs = 3_000, send = ''): Promise<{ ok: boolean; data: string; error?: string }> {
    return traffic.tcpFetch(this, host, addr, port, timeoutMs, send);
  }

  /** curl -s --max-time from a host: ok when curl exits 0; body is what came back. */
  httpGet(host: string, addr: string, port: number, maxTimeSec = 3): Promise<{ ok: boolean; body: string; error?: string }> {
    return traffic.httpGet(this, host, addr, port, maxTimeSec);
  }
}
