// Processes of the lab: commands run to completion (bounded), and long-running ones inside a host.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from '../bpf/object-files.js';

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
export function sleepSync(ms: number): void {
  Atomics.wait(sleepArray, 0, 0, ms);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function describeArgv(argv: readonly string[]): string {
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

export function runSync(argv: readonly string[], timeoutMs = 10_000): { code: number | null; stdout: string } {
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
