// connect() latency over veth in three configurations, rounds alternating so drift on this noisy
// machine falls on all of them alike:
//   spak     `spak server` (XDP on the server's eth0) + `spak client` (TC egress on the client's)
//   bare     bare programs on the same hooks (bpf/baseline.bpf.c through src/bpf/libbpf.ts)
//   nothing  nothing attached
// spak / bare is what spak itself costs; bare / nothing is what having programs on those hooks costs.
import path from 'node:path';
import { hasXdp, Lab, REPO_ROOT, run, startSpak, type LabProcess } from '../src/lab/lab.js';
import { median } from './median.js';

export type ConnectConfig = 'spak' | 'bare' | 'nothing';
export const CONNECT_CONFIGS: readonly ConnectConfig[] = ['spak', 'bare', 'nothing'];

export interface ConnectFigures {
  /** Median over rounds of each round's median connect() time. */
  us: number;
  /** Lowest and highest round medians: how noisy the machine was during the run. */
  range: [number, number];
  rounds: number[];
}

export interface ConnectResult {
  configs: Record<ConnectConfig, ConnectFigures>;
  /** Ratios of the medians above. */
  spakOverBare: number;
  spakOverNothing: number;
  bareOverNothing: number;
  /** spak / bare within each round: the paired figure, less exposed to drift between rounds. */
  pairedSpakOverBare: { median: number; min: number; max: number };
  rounds: number;
  connectsPerRound: number;
  /** What the XDP programs attached as (spak's banner, the bare hook's line). */
  spakXdpMode: string;
  bareXdpMode: string;
}

const KEY = '112233445566778899aabbccddeeff00';
const PORT = 9000;

// Sequential connect()+destroy; prints the median handshake time in µs.
const CONNECT_LOOP = `
const net = require('node:net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const times = [];
function one(i) {
  if (i === n) {
    times.sort((a, b) => a - b);
    console.log(JSON.stringify({ medianUs: times[times.length >> 1] }));
    return;
  }
  const t0 = process.hrtime.bigint();
  const s = net.connect({ host, port });
  s.setTimeout(3000, () => { console.error('connect timeout'); process.exit(1); });
  s.on('error', (e) => { console.error(String(e)); process.exit(1); });
  s.on('connect', () => { times.push(Number(process.hrtime.bigint() - t0) / 1000); s.destroy(); setImmediate(() => one(i + 1)); });
}
one(0);
`;

// Accepts and closes: the handshake is all that is measured.
const ACCEPT_LOOP = `
require('node:net').createServer((s) => s.destroy()).listen(Number(process.argv[2]), process.argv[1], () => console.log('listening'));
`;

const HOOKS = path.join(REPO_ROOT, 'dist', 'bench', 'hooks.js');

export async function benchConnect(connects: number, rounds = 8): Promise<ConnectResult> {
  const lab = await Lab.create({ tag: 'bench' });
  try {
    const server = await lab.addHost('server', 1);
    const client = await lab.addHost('client', 2);
    const listener = lab.spawn('server', [process.execPath, '-e', ACCEPT_LOOP, server.v4, String(PORT)], {}, 'accept loop');
    await listener.waitForLine(/listening/);
    const measure = async (): Promise<number> => {
      const r = await lab.exec('client', [process.execPath, '-e', CONNECT_LOOP, server.v4, String(PORT), String(connects)], {
        timeoutMs: 120_000,
      });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      if (r.code !== 0 || !line.startsWith('{')) throw new Error(`connect loop failed: ${r.stderr.trim() || line}`);
      return (JSON.parse(line) as { medianUs: number }).medianUs;
    };
    // Nothing of a previous configuration may still be attached when "bare" or "nothing" runs.
    const assertClean = async (before: string): Promise<void> => {
      if (await hasXdp(lab, 'server')) throw new Error(`an XDP program is still attached on the server's eth0 before the ${before} round`);
      const tc = await run(['tc', '-n', client.ns, 'filter', 'show', 'dev', 'eth0', 'egress']);
      if (tc.stdout.trim()) throw new Error(`a tc egress filter is still on the client's eth0 before the ${before} round:\n${tc.stdout.trim()}`);
    };
    let spakXdpMode = '';
    let bareXdpMode = '';
    const withConfig = async (config: ConnectConfig): Promise<number> => {
      if (config === 'nothing') {
        await assertClean(config);
        return measure();
      }
      if (config === 'bare') {
        await assertClean(config);
        const held: LabProcess[] = [];
        try {
          for (const [host, argv] of [
            ['server', ['xdp', 'eth0', 'native']],
            ['client', ['tc', 'eth0']],
          ] as const) {
            const p = lab.spawn(host, [process.execPath, HOOKS, ...argv], {}, `bare ${argv[0]} hook on ${host}`);
            held.push(p);
            const line = await p.waitForLine(/bare hook: .* attached/, 15_000);
            if (argv[0] === 'xdp') bareXdpMode = /XDP \((\w+)\)/.exec(line)?.[1] ?? '?';
          }
          return await measure();
        } finally {
          for (const p of held.reverse()) await p.stop();
        }
      }
      const srv = await startSpak(lab, 'server', 'server', { args: [server.v4, String(PORT), '1', 'eth0'], secret: KEY });
      spakXdpMode = /XDP \((\w+)\)/.exec(srv.banner)?.[1] ?? '?';
      try {
        const cli = await startSpak(lab, 'client', 'client', { args: [server.v4, String(PORT), '1', 'eth0'], secret: KEY });
        try {
          return await measure();
        } finally {
          await cli.stop();
        }
      } finally {
        await srv.stop();
        // A server that leaves its protection pinned and in force after SIGTERM is removed
        // explicitly; on a build without `spak server stop` this fails harmlessly.
        await lab.serverStop('server');
      }
    };
    await measure(); // warm up caches, ARP and the page cache of node itself
    const samples: Record<ConnectConfig, number[]> = { spak: [], bare: [], nothing: [] };
    const paired: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Each configuration takes each position in turn.
      const order = CONNECT_CONFIGS.map((_, i) => CONNECT_CONFIGS[(i + r) % CONNECT_CONFIGS.length]!);
      const got: Partial<Record<ConnectConfig, number>> = {};
      for (const c of order) {
        got[c] = await withConfig(c);
        samples[c].push(got[c]);
      }
      paired.push(got.spak! / got.bare!);
    }
    const figures = (xs: number[]): ConnectFigures => ({ us: median(xs), range: [Math.min(...xs), Math.max(...xs)], rounds: xs });
    const configs = { spak: figures(samples.spak), bare: figures(samples.bare), nothing: figures(samples.nothing) };
    return {
      configs,
      spakOverBare: configs.spak.us / configs.bare.us,
      spakOverNothing: configs.spak.us / configs.nothing.us,
      bareOverNothing: configs.bare.us / configs.nothing.us,
      pairedSpakOverBare: { median: median(paired), min: Math.min(...paired), max: Math.max(...paired) },
      rounds,
      connectsPerRound: connects,
      spakXdpMode,
      bareXdpMode,
    };
  } finally {
    await lab.destroy();
  }
}
