// spak in the lab: daemons started in a host and waited for, their counters, and where their hooks are.
import path from 'node:path';
import { parseCounters, type Counters } from './counters.js';
import type { Lab } from './hosts.js';
import { REPO_ROOT, run, SPAK_BIN, type LabProcess } from './process.js';

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

