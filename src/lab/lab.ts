// A throw-away LAN of network namespaces for the e2e tests, the demo and the benchmark.
//
//   <prefix>-lan   holds bridge br0
//   <prefix>-<h>   one per host: eth0 (veth, peer "<h>-p" on br0), 198.51.100.x/24 and 2001:db8::x/64
//
// Only documentation addresses (198.51.100.0/24, 2001:db8::/32), only inside namespaces made here.
// Every lab is registered: process 'exit', SIGINT, SIGTERM and SIGHUP remove them all, with every
// process inside them. Nothing is ever attached to the host's own interfaces.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../bpf/objects.js';
import { hostPort } from '../wire/address.js';

/** The repository root (this file is src/lab/lab.ts, compiled to dist/src/lab/lab.js). */
export { REPO_ROOT };
/** The spak command line; run it with process.execPath so the node in use is the one that runs it. */
export const SPAK_BIN = path.join(REPO_ROOT, 'bin', 'spak');
/** Debian's python3 has scapy; a python3 earlier on PATH may not. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

export const V4_PREFIX = '198.51.100.';
export const V6_PREFIX = '2001:db8::';

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when we killed it for running past timeoutMs. */
  timedOut: boolean;
}

export interface ExecOptions {
  /** Kill (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
  env?: Record<string, string>;
  input?: string;
  /** Throw unless it exits 0. */
  check?: boolean;
  cwd?: string;
}

const sleepArray = new Int32Array(new SharedArrayBuffer(4));
/** Blocks the thread: only for the synchronous teardown paths (process 'exit'). */
function sleepSync(ms: number): void {
  Atomics.wait(sleepArray, 0, 0, ms);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describeArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w./:@=+-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** Runs a command (in the root namespace unless argv says otherwise), bounded by timeoutMs. */
export function run(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new Error('run: empty argv'));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...opts.env },
      cwd: opts.cwd ?? REPO_ROOT,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${describeArgv(argv)}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res: ExecResult = { code, signal, stdout, stderr, timedOut };
      if (opts.check && code !== 0)
        reject(
          new Error(
            `${describeArgv(argv)}: ${timedOut ? 'timed out' : `exit ${code ?? signal}`}${stderr ? `: ${stderr.trim()}` : ''}`,
          ),
        );
      else resolve(res);
    });
  });
}

function runSync(argv: readonly string[], timeoutMs = 10_000): { code: number | null; stdout: string } {
  const [cmd, ...args] = argv;
  const r = spawnSync(cmd!, args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  return { code: r.status, stdout: r.stdout ?? '' };
}

/** A process running inside a lab host. */
export class LabProcess {
  readonly name: string;
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  /** stdout and stderr interleaved as they arrived. */
  output = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  readonly exited: Promise<void>;
  #listeners = new Set<() => void>();
  #done = false;

  constructor(name: string, child: ChildProcess) {
    this.name = name;
    this.child = child;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d;
      this.output += d;
      this.#notify();
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      this.output += d;
      this.#notify();
    });
    this.exited = new Promise((resolve) => {
      const finish = () => {
        if (this.#done) return;
        this.#done = true;
        this.#notify();
        resolve();
      };
      child.on('close', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        finish();
      });
      child.on('error', (err) => {
        this.output += `\n[spawn error: ${err.message}]\n`;
        this.exitCode = -1;
        finish();
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return !this.#done;
  }

  #notify(): void {
    for (const l of [...this.#listeners]) l();
  }

  /**
   * Resolves with the first match of re in the output (stdout+stderr) from character `from` on.
   * Rejects when the process exits first or after timeoutMs; the error carries the output.
   */
  waitFor(re: RegExp, timeoutMs = 10_000, from = 0): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const m = this.output.slice(from).match(re);
        if (m) {
          cleanup();
          resolve(m);
          return true;
        }
        if (this.#done) {
          cleanup();
          reject(
            new Error(
              `${this.name} exited (${this.exitCode ?? this.exitSignal}) before printing ${re}; output:\n${this.output}`,
            ),
          );
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.name}: no ${re} within ${timeoutMs} ms; output:\n${this.output}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#listeners.delete(listener);
      };
      const listener = () => void check();
      this.#listeners.add(listener);
      check();
    });
  }

  /** Resolves with the first line matching re (stdout or stderr). */
  async waitForLine(re: RegExp, timeoutMs = 10_000, from = 0): Promise<string> {
    const flags = re.flags.includes('m') ? re.flags : `${re.flags}m`;
    const lineRe = new RegExp(`^.*(?:${re.source}).*$`, flags);
    const m = await this.waitFor(lineRe, timeoutMs, from);
    return m[0];
  }

  signal(sig: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running) this.child.kill(sig);
  }

  /** SIGTERM (or sig), wait up to timeoutMs for the exit, then SIGKILL. Returns all of stdout. */
  async stop(timeoutMs = 5_000, sig: NodeJS.Signals = 'SIGTERM'): Promise<string> {
    if (this.running) {
      this.child.kill(sig);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.exited.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
      ]);
      clearTimeout(timer);
      if (timedOut && this.running) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    await this.exited;
    return this.stdout;
  }
}

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

const labs = new Set<Lab>();
let handlersInstalled = false;
let labCounter = 0;

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => destroyAllLabsSync());
  const onSignal = (sig: NodeJS.Signals, code: number) => {
    if (labs.size > 0) process.stderr.write(`spak lab: ${sig}: removing ${labs.size} lab(s)\n`);
    destroyAllLabsSync();
    process.exit(code);
  };
  process.once('SIGINT', () => onSignal('SIGINT', 130));
  process.once('SIGTERM', () => onSignal('SIGTERM', 143));
  process.once('SIGHUP', () => onSignal('SIGHUP', 129));
}

/** Where spak pins its state for a network namespace other than the initial one (see the README). */
export const SPAK_BPFFS_DIR = '/sys/fs/bpf/spak';
/** spak's lock files (one per interface and role). */
export const SPAK_LOCK_DIR = '/run/spak';

/** The inode of a named namespace (/run/netns/<ns>), which names spak's pin directory; null if gone. */
export function netnsInode(ns: string): number | null {
  try {
    return statSync(`/run/netns/${ns}`).ino;
  } catch {
    return null;
  }
}

/**
 * Removes what spak pinned for the namespace with this inode: /sys/fs/bpf/spak/netns-<inode>/ (every
 * pin under it, then the directories; bpffs pins go with unlink) and its lock files in /run/spak.
 * Best effort, never throws: it runs from exit handlers.
 */
export function removeSpakPins(inode: number): void {
  const dir = path.join(SPAK_BPFFS_DIR, `netns-${inode}`);
  try {
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  } catch {
    // best effort
  }
  try {
    // Lock names are the pin path relative to bpffs with '/' turned into '_': ..._netns-<inode>_eth0.server.lock
    const mine = new RegExp(`(^|_)netns-${inode}(_|\\.|$)`);
    for (const name of readdirSync(SPAK_LOCK_DIR)) if (mine.test(name)) rmSync(path.join(SPAK_LOCK_DIR, name), { force: true });
  } catch {
    // no lock directory
  }
}

/** Tears down every lab of this process, synchronously (usable from an 'exit' handler). */
export function destroyAllLabsSync(): void {
  for (const lab of [...labs]) lab.destroySync();
}

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
    labs.add(this);
    installHandlers();
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
    labs.delete(this);
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

  /* ---------------- traffic helpers ---------------- */

  /** Waits until something listens on addr:port in a host (polls `ss`). */
  async waitListening(host: string, addr: string, port: number, timeoutMs = 10_000): Promise<void> {
    const want = hostPort(addr, port);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.exec(host, ['ss', '-Hltn'], { timeoutMs: 5_000 });
      const locals = r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[3]);
      if (locals.includes(want) || locals.includes(`*:${port}`) || locals.includes(`[::]:${port}`)) return;
      if (Date.now() > deadline) throw new Error(`nothing listens on ${want} in ${host} after ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  /**
   * A real TCP service on addr:port in a host, returned once it listens.
   *  - 'http': python3 -m http.server serving `page` as index.html
   *  - 'echo': ncat echoing back whatever it reads (cat per connection)
   *  - 'banner': ncat writing `page` to each connection, then closing
   */
  async startService(
    host: string,
    addr: string,
    port: number,
    kind: 'http' | 'echo' | 'banner' = 'http',
    page = 'spak-demo-ok\n',
  ): Promise<LabProcess> {
    let argv: string[];
    if (kind === 'http') {
      const root = mkdtempSync(path.join(this.dir, `www-${port}-`));
      writeFileSync(path.join(root, 'index.html'), page);
      argv = [SYSTEM_PYTHON, '-u', '-m', 'http.server', String(port), '--bind', addr, '--directory', root];
    } else if (kind === 'echo') {
      argv = ['ncat', '-lk', addr, String(port), '--sh-exec', 'cat'];
    } else {
      const file = this.writeFile(`banner-${port}-${addr.replace(/[:.]/g, '_')}.txt`, page);
      argv = ['ncat', '-lk', addr, String(port), '--sh-exec', `cat ${file}`];
    }
    const proc = this.spawn(host, argv, {}, `${kind} service ${host} ${addr} ${port}`);
    try {
      await Promise.race([
        this.waitListening(host, addr, port),
        proc.exited.then(() => {
          throw new Error(`${proc.name} exited: ${proc.output}`);
        }),
      ]);
    } catch (err) {
      await proc.stop(1_000);
      throw err;
    }
    return proc;
  }

  /**
   * connect() only, from a host to addr:port, bounded by timeoutMs: {ok: true} once connected,
   * else {ok: false, error: 'timeout' | errno code}.
   */
  async tcpConnect(host: string, addr: string, port: number, timeoutMs = 2_000): Promise<{ ok: boolean; error?: string }> {
    const r = await this.exec(host, [process.execPath, '-e', CONNECT_SCRIPT, addr, String(port), String(timeoutMs)], {
      timeoutMs: timeoutMs + 10_000,
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as { ok: boolean; error?: string };
    } catch {
      return { ok: false, error: `connect helper failed: ${r.stderr.trim() || r.stdout.trim() || `exit ${r.code}`}` };
    }
  }

  /** Connects, optionally sends `send`, reads until the peer closes: {ok, data, error}. Bounded. */
  async tcpFetch(
    host: string,
    addr: string,
    port: number,
    timeoutMs = 3_000,
    send = '',
  ): Promise<{ ok: boolean; data: string; error?: string }> {
    const r = await this.exec(
      host,
      [process.execPath, '-e', FETCH_SCRIPT, addr, String(port), String(timeoutMs), send],
      { timeoutMs: timeoutMs + 10_000 },
    );
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as { ok: boolean; data: string; error?: string };
    } catch {
      return { ok: false, data: '', error: `fetch helper failed: ${r.stderr.trim() || `exit ${r.code}`}` };
    }
  }

  /** curl -s --max-time from a host: ok when curl exits 0; body is what came back. */
  async httpGet(host: string, addr: string, port: number, maxTimeSec = 3): Promise<{ ok: boolean; body: string; error?: string }> {
    const url = `http://${hostPort(addr, port)}/`;
    const r = await this.exec(host, ['curl', '-sS', '-g', '--max-time', String(maxTimeSec), url], {
      timeoutMs: maxTimeSec * 1000 + 10_000,
    });
    if (r.code === 0) return { ok: true, body: r.stdout };
    return { ok: false, body: r.stdout, error: r.stderr.trim() || `curl exit ${r.code}` };
  }
}

// node -e helpers (CommonJS): argv = [node, addr, port, timeoutMs, ...]
const CONNECT_SCRIPT = `
const net = require('net');
const [addr, port, ms] = process.argv.slice(1);
const done = (r) => { process.stdout.write(JSON.stringify(r) + '\\n'); process.exit(0); };
const s = net.connect({ host: addr, port: Number(port) });
setTimeout(() => { s.destroy(); done({ ok: false, error: 'timeout' }); }, Number(ms));
s.on('connect', () => { s.destroy(); done({ ok: true }); });
s.on('error', (e) => done({ ok: false, error: e.code || e.message }));
`;

const FETCH_SCRIPT = `
const net = require('net');
const [addr, port, ms, send] = process.argv.slice(1);
let data = '', connected = false;
const done = (r) => { process.stdout.write(JSON.stringify(r) + '\\n'); process.exit(0); };
const s = net.connect({ host: addr, port: Number(port) });
setTimeout(() => { s.destroy(); done({ ok: false, data, error: connected ? 'timeout reading' : 'timeout' }); }, Number(ms));
s.setEncoding('utf8');
s.on('connect', () => { connected = true; if (send) s.write(send); });
s.on('data', (d) => { data += d; });
s.on('end', () => { s.destroy(); done({ ok: connected, data }); });
s.on('error', (e) => done({ ok: false, data, error: e.code || e.message }));
`;

/* ---------------- spak processes ---------------- */

export type Counters = Record<string, number>;

/** Parses the last "spak <role> counters:" block in text; absent counters are 0 (read as undefined). */
export function parseCounters(text: string, role: 'server' | 'client' = 'server'): Counters | null {
  const marker = `spak ${role} counters:\n`;
  const at = text.lastIndexOf(marker);
  if (at < 0) return null;
  const out: Counters = {};
  for (const line of text.slice(at + marker.length).split('\n')) {
    const m = /^ {2}(\w+)\s+(\d+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
    else if (!/^ {2}\(no packets counted\)$/.test(line)) break;
  }
  return out;
}

/** A counter's value, 0 when absent. */
export function counter(c: Counters | null, name: string): number {
  return c?.[name] ?? 0;
}

export interface SpakServerConfig {
  interface?: string;
  keys: { id: number; secret: string }[];
  protect: { address: string; port: number }[];
  [extra: string]: unknown;
}

export interface SpakClientConfig {
  interface?: string;
  destinations: { address: string; port: number; keyId: number; secret: string }[];
  [extra: string]: unknown;
}

/** A running `spak server` or `spak client`. */
export class SpakProcess {
  constructor(
    readonly role: 'server' | 'client',
    readonly proc: LabProcess,
    /** The "attached" line it printed. */
    readonly banner: string,
  ) {}

  /** SIGUSR1, then the counters it prints. */
  async counters(timeoutMs = 5_000): Promise<Counters> {
    const from = this.proc.output.length;
    const block = new RegExp(`spak ${this.role} counters:\\n(?: {2}.*\\n)+`);
    // A SIGUSR1 that arrives just after the banner can find node without spak's handler yet (node
    // then opens its inspector and prints no counters): ask again, a bounded number of times.
    for (let attempt = 1; ; attempt++) {
      this.proc.signal('SIGUSR1');
      try {
        // The block is one write() well under PIPE_BUF: it arrives whole.
        await this.proc.waitFor(block, attempt < 3 ? Math.min(timeoutMs, 2_000) : timeoutMs, from);
        break;
      } catch (err) {
        if (attempt >= 3 || !this.proc.running) throw err;
      }
    }
    return parseCounters(this.proc.output.slice(from), this.role) ?? {};
  }

  /** SIGTERM and wait: returns the final counters (null if it printed none) and all output. */
  async stop(timeoutMs = 5_000): Promise<{ counters: Counters | null; output: string }> {
    await this.proc.stop(timeoutMs);
    return { counters: parseCounters(this.proc.stdout, this.role), output: this.proc.output };
  }

  /** Sends sig (default SIGKILL: a crash) and waits for the exit, bounded (then SIGKILL). */
  async kill(sig: NodeJS.Signals = 'SIGKILL', timeoutMs = 5_000): Promise<void> {
    await this.proc.stop(timeoutMs, sig);
  }

  get running(): boolean {
    return this.proc.running;
  }
}

/**
 * Starts `spak <role>` in a host: with a config object (written to a temp file, interface
 * defaults to eth0) or positional args (key in SECRET_KEY). Resolves once it has attached.
 */
/**
 * The enforcement mode spak servers started here run in: SPAK_ENFORCEMENT ('xdp' or 'tc'; the test
 * runner sets it for the e2e files it runs in both modes), default xdp.
 */
export function labEnforcement(): 'xdp' | 'tc' {
  const e = process.env.SPAK_ENFORCEMENT ?? 'xdp';
  if (e !== 'xdp' && e !== 'tc') throw new Error(`SPAK_ENFORCEMENT="${e}": xdp or tc`);
  return e;
}

/** What the server's banner says of its hook in the lab's mode: "XDP (native)"-like, or "TC ingress". */
export const serverHookPattern = (): string => (labEnforcement() === 'tc' ? 'TC ingress' : 'XDP \\((?:native|generic)\\)');

export async function startSpak(
  lab: Lab,
  host: string,
  role: 'server' | 'client',
  how: { config: SpakServerConfig | SpakClientConfig } | { args: string[]; secret: string },
  extraArgs: string[] = [],
  timeoutMs = 15_000,
): Promise<SpakProcess> {
  let argv: string[];
  const env: Record<string, string> = {};
  if ('config' in how) {
    const file = lab.writeFile(
      `${role}-${host}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}.json`,
      JSON.stringify({ [role]: { interface: 'eth0', ...how.config } }, null, 2),
    );
    argv = [process.execPath, SPAK_BIN, role, '--config', file, ...extraArgs];
  } else {
    argv = [process.execPath, SPAK_BIN, role, ...how.args, ...extraArgs];
    env.SECRET_KEY = how.secret;
  }
  if (role === 'server' && labEnforcement() === 'tc' && !extraArgs.includes('--enforcement')) argv.push('--enforcement', 'tc');
  // nsenter, not `ip netns exec`: the server's bpffs pins must outlive the process.
  const proc = lab.spawn(host, argv, env, `spak ${role} on ${host}`, 'nsenter');
  const banner = role === 'server' ? /spak server: (XDP|TC ingress)/ : /spak client: TC egress/;
  try {
    const line = await proc.waitForLine(banner, timeoutMs);
    return new SpakProcess(role, proc, line);
  } catch (err) {
    await proc.stop(2_000);
    throw err;
  }
}

/** Does the host's eth0 have an XDP program attached? */
export async function hasXdp(lab: Lab, host: string, ifname = 'eth0'): Promise<boolean> {
  const r = await run(['ip', '-n', lab.host(host).ns, 'link', 'show', ifname], { check: true });
  return /\bxdp(generic|drv|offload)?\b/.test(r.stdout) || /prog\/xdp/.test(r.stdout);
}

/** Programs attached at TC ingress of a host's eth0 through tcx (read inside its namespace). */
export async function tcxIngress(lab: Lab, host: string, iface = 'eth0'): Promise<number[]> {
  const lib = path.join(REPO_ROOT, 'dist', 'src', 'bpf', 'libbpf.js');
  const script = `import(${JSON.stringify(lib)}).then((m) => console.log(JSON.stringify(m.queryTcxIngress(m.ifIndex(${JSON.stringify(iface)})))))`;
  const r = await lab.execNet(host, [process.execPath, '-e', script], { check: true });
  return JSON.parse(r.stdout) as number[];
}

/** Is the server's hook of the lab's mode (XDP, or a tcx program at TC ingress) attached to the host's eth0? */
export async function hasServerHook(lab: Lab, host: string): Promise<boolean> {
  return labEnforcement() === 'tc' ? (await tcxIngress(lab, host)).length > 0 : hasXdp(lab, host);
}

/** Removes namespaces named spak-<pid>-... whose pid no longer runs (left by a SIGKILLed run). */
export function removeStaleLabs(): string[] {
  const removed: string[] = [];
  const names = runSync(['ip', 'netns', 'list'])
    .stdout.split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
  for (const ns of names) {
    const m = /^spak-(\d+)-/.exec(ns);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue; // its owner still runs
    } catch {
      // owner gone
    }
    for (const p of runSync(['ip', 'netns', 'pids', ns]).stdout.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone
      }
    }
    const inode = netnsInode(ns);
    runSync(['ip', 'netns', 'del', ns]);
    if (inode !== null) removeSpakPins(inode);
    removed.push(ns);
  }
  return removed;
}
