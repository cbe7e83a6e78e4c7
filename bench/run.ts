// make bench: measures, prints, and writes BENCHMARKS.md. Every figure is paired with its
// baseline measured in the same run; targets are reported (met or NOT met), never asserted.
//
// The XDP cases run side by side with the build of a previous ref (HEAD~1, or SPAK_BENCH_REF /
// `make bench REF=...`), checked out and built in a temporary worktree: each round runs this
// build's bench/xdp.ts and the previous build's own copy in fresh child processes, so each side
// fills its maps with its own daemon and wire code, and an improvement is a ratio from one run.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../src/bpf/object-files.js';
import { killBenchChildren, runBenchChild } from './child.js';
import { benchConnect, type ConnectResult } from './connect.js';
import { median } from './median.js';
import type { HpkeRate } from './hpke.js';
import type { KnockBenchResult } from './knock.js';
import { buildRef, removeRef, type RefBuild } from './ref.js';
import { SWEEP_INTERVAL_S, type SweepResult } from './sweep.js';
import type { XdpCase } from './xdp.js';
import type { TcCase } from './tc.js';

const num = (name: string, dflt: number): number => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}=${v}: expected a positive integer`);
  return n;
};
const REPEAT = num('SPAK_BENCH_REPEAT', 10_000_000);
const ROUNDS = num('SPAK_BENCH_ROUNDS', 7);
const CONNECTS = num('SPAK_BENCH_CONNECTS', 300);
const CONNECT_ROUNDS = num('SPAK_BENCH_CONNECT_ROUNDS', 15);
const FLOWS = num('SPAK_BENCH_FLOWS', 250_000);
const SWEEPS = num('SPAK_BENCH_SWEEPS', 5);
const REF = process.env.SPAK_BENCH_REF || 'HEAD~1';
const KNOCKS = num('SPAK_BENCH_KNOCKS', 100);
const KNOCK_FLOOD_SECONDS = Math.min(10, num('SPAK_BENCH_KNOCK_FLOOD_SECONDS', 10));
const KNOCK_FLOOD_KNOCKS = num('SPAK_BENCH_KNOCK_FLOOD_KNOCKS', 100);
const HPKE_SECONDS = num('SPAK_BENCH_HPKE_SECONDS', 3);
/** TC rows: this build only, a tenth of the XDP repeats (each TC run costs more). */
const TC_REPEAT = Math.max(1, Math.floor(REPEAT / 10));

/** The issue's targets: the kernel's ns per packet over the bare XDP_PASS program's. */
const XDP_TARGETS: Record<string, number> = {
  'invalid SYN (bad tag)': 30,
  'valid SYN, first sight (1 run per packet)': 150,
  'established-flow ACK': 12,
  'unprotected packet (TCP ACK to :80)': 2,
};
const CONNECT_TARGET = 1.02;
const SWEEP_TARGET_PERCENT = 2;
const SWEEP_TARGET_FLOWS = 250_000;
const KNOCK_P99_TARGET_MS = 2;
const HPKE_TARGET = 5_000;
const FLOOD_SHARE_TARGET = 99;

const VERDICT = ['aborted', 'drop', 'pass', 'tx', 'redirect'];

interface Side {
  own: number[];
  base: number[];
  wall: number[];
  wallBase: number[];
  verdicts: Set<number>;
}

interface CaseRow {
  name: string;
  this: Side | null;
  prev: Side | null;
}

function signed(x: number): string {
  return `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;
}

function collect(into: Map<string, CaseRow>, side: 'this' | 'prev', cases: XdpCase[]): void {
  for (const c of cases) {
    const row = into.get(c.name) ?? { name: c.name, this: null, prev: null };
    const s = (row[side] ??= { own: [], base: [], wall: [], wallBase: [], verdicts: new Set() });
    s.own.push(c.nsPerPacket);
    s.base.push(c.baselineNs);
    if (c.wallNs !== null && c.wallBaselineNs !== null) {
      s.wall.push(c.wallNs);
      s.wallBase.push(c.wallBaselineNs);
    }
    s.verdicts.add(c.verdict);
    into.set(c.name, row);
  }
}

function xdpTable(rows: CaseRow[], prev: RefBuild, prevOk: boolean): string {
  const p = prevOk ? prev.commit : 'previous';
  const lines = rows.map((row) => {
    // The bare program's figure: every baseline sample of the case, from both builds' rounds.
    const bare = median([...(row.this?.base ?? []), ...(row.prev?.base ?? [])]);
    const wallBareXs = [...(row.this?.wallBase ?? []), ...(row.prev?.wallBase ?? [])];
    const t = row.this ? median(row.this.own) : null;
    const q = row.prev ? median(row.prev.own) : null;
    const verdict = (s: Side | null) => (s ? [...s.verdicts].map((v) => VERDICT[v] ?? String(v)).join('/') : '–');
    const verdicts = row.prev && prevOk ? `${verdict(row.this)} / ${verdict(row.prev)}` : verdict(row.this);
    const f = (x: number | null) => (x === null ? '–' : x.toFixed(1));
    const d = (x: number | null) => (x === null ? '–' : signed(x - bare));
    const ratio = t !== null && q !== null ? `${(t / q).toFixed(3)}x` : row.this ? `only in this build` : `only in ${p}`;
    const wallT = row.this?.wall.length ? median(row.this.wall) : null;
    const wallQ = row.prev?.wall.length ? median(row.prev.wall) : null;
    const wall = wallBareXs.length ? `${f(wallT)} / ${f(wallQ)} / ${median(wallBareXs).toFixed(1)}` : 'n/a';
    const limit = XDP_TARGETS[row.name];
    const target = limit === undefined ? '–' : `<= +${limit}`;
    const met = limit === undefined || t === null ? '' : t - bare <= limit ? 'met' : 'NOT met';
    return `| ${row.name} | ${verdicts} | ${f(t)} | ${f(q)} | ${bare.toFixed(1)} | ${ratio} | ${d(t)} | ${d(q)} | ${wall} | ${target} | ${met} |`;
  });
  return [
    `| case | verdict (this / ${p}) | this build ns | ${p} ns | bare XDP_PASS ns | this / ${p} | this − bare ns | ${p} − bare ns | wall-timed this / ${p} / bare ns | target (this − bare) | this build |`,
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...lines,
  ].join('\n');
}

function connectTable(r: ConnectResult): string {
  const names = { spak: 'spak (server XDP + client TC)', bare: 'bare programs on the same hooks', nothing: 'nothing attached' } as const;
  const rows = (['spak', 'bare', 'nothing'] as const).map((c) => {
    const x = r.configs[c];
    return `| ${names[c]} | ${x.us.toFixed(1)} | ${x.range[0].toFixed(1)} – ${x.range[1].toFixed(1)} | ${r.rounds} x ${r.connectsPerRound} |`;
  });
  const met = r.spakOverBare <= CONNECT_TARGET ? 'met' : 'NOT met';
  return [
    '| configuration | median connect() µs | round medians µs (min – max) | rounds x connects |',
    '|---|---|---|---|',
    ...rows,
    '',
    '| ratio | value | spread | target |',
    '|---|---|---|---|',
    `| spak / bare hooks | ${r.spakOverBare.toFixed(3)} | within a round: median ${r.pairedSpakOverBare.median.toFixed(3)}, ${r.pairedSpakOverBare.min.toFixed(3)} – ${r.pairedSpakOverBare.max.toFixed(3)} | <= ${CONNECT_TARGET}: ${met} |`,
    `| spak / nothing | ${r.spakOverNothing.toFixed(3)} | | |`,
    `| bare hooks / nothing | ${r.bareOverNothing.toFixed(3)} | | |`,
  ].join('\n');
}

function sweepTable(s: SweepResult): string {
  const judged = s.wantedFlows >= SWEEP_TARGET_FLOWS;
  let verdict: string;
  if (!judged) verdict = `not judged: only ${s.wantedFlows} flows asked for (SPAK_BENCH_FLOWS)`;
  else if (s.flows < SWEEP_TARGET_FLOWS) verdict = `NOT met: the flow table held only ${s.flows} of ${s.wantedFlows} flows`;
  else verdict = s.corePercent < SWEEP_TARGET_PERCENT ? 'met' : 'NOT met';
  const ms = (xs: number[]) => `${Math.min(...xs).toFixed(1)} – ${Math.max(...xs).toFixed(1)}`;
  return [
    '| | value |',
    '|---|---|',
    `| flows asked for / valid SYNs passed / flows in the table | ${s.wantedFlows} / ${s.passedSyns} / ${s.flows} |`,
    `| CPU per sweep, median (min – max of ${s.cpuMs.length}) | ${s.medianCpuMs.toFixed(1)} ms (${ms(s.cpuMs)} ms) |`,
    `| wall time per sweep (min – max) | ${ms(s.wallMs)} ms |`,
    `| share of one core at one sweep per ${SWEEP_INTERVAL_S} s (the daemon's interval with default settings) | ${s.corePercent.toFixed(2)} % |`,
    `| target: < ${SWEEP_TARGET_PERCENT} % of one core with ${SWEEP_TARGET_FLOWS} flows | ${verdict} |`,
    `| last sweep() reported | ${Object.entries(s.last).map(([k, v]) => `${k} ${v}`).join(', ')} |`,
  ].join('\n');
}

function knockTable(k: KnockBenchResult, hpke: { node: HpkeRate; stock: HpkeRate; knock: HpkeRate }): string {
  const l = k.latency;
  const f = k.flood;
  const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const r = (x: HpkeRate) => `${Math.round(x.perCpuSecond)} (${Math.round(x.perWallSecond)}/s wall clock)`;
  const moved = Object.entries(f.counters).map(([n, v]) => `${n} ${v}`).join(', ') || 'none';
  return [
    '| | value | target |',
    '|---|---|---|',
    `| knock sent -> first connect, p50 / p99 / max (${l.opened} of ${l.knocks} knocks opened within 2 s) | ${l.p50Ms.toFixed(2)} / ${l.p99Ms.toFixed(2)} / ${l.maxMs.toFixed(2)} ms | p99 < ${KNOCK_P99_TARGET_MS} ms: ${met(l.opened === l.knocks && l.p99Ms < KNOCK_P99_TARGET_MS)} |`,
    `| HPKE opens per CPU-second, the daemon's suite (knockSuite: node:crypto primitives) | ${r(hpke.node)} | >= ${HPKE_TARGET}: ${met(hpke.node.perCpuSecond >= HPKE_TARGET)} |`,
    `| HPKE opens per CPU-second, @hpke/core's stock WebCrypto suite | ${r(hpke.stock)} | |`,
    `| whole knocks opened per CPU-second (prefilter tag, HPKE open, plaintext) | ${r(hpke.knock)} | |`,
    `| garbage flood at the knock port: ${f.tool} | ${f.seconds.toFixed(1)} s, ${f.dropped} dropped in XDP (${Math.round(f.pps)} pps) | |`,
    `| valid knocks that opened the port during the flood | ${f.opened} of ${f.knocks} (${f.sharePercent.toFixed(1)} %) | >= ${FLOOD_SHARE_TARGET} %: ${met(f.sharePercent >= FLOOD_SHARE_TARGET)} |`,
    `| the daemon's CPU during the flood / idle for as long before it (share of one core) | ${f.daemonCpuPercent.toFixed(1)} % / ${f.daemonIdleCpuPercent.toFixed(1)} % | near idle |`,
    `| server counters that moved during the flood | ${moved} | |`,
  ].join('\n');
}

async function main(): Promise<void> {
  // The previous ref's worktree goes on exit, also when interrupted; children running from it
  // go first (this hook is installed before ref.ts's).
  process.on('exit', killBenchChildren);
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));

  process.stdout.write(`previous build: checking out and building ${REF}...\n`);
  const prev = buildRef(REPO_ROOT, REF);
  let prevError = prev.error;
  process.stdout.write(prev.root ? `  ${prev.commit} ${prev.subject}\n` : `  cannot be built: ${prev.error}\n`);
  if (prev.warning) process.stdout.write(`  ${prev.warning}\n`);

  const rows = new Map<string, CaseRow>();
  try {
    process.stdout.write(`XDP: ${ROUNDS} rounds x ${REPEAT} repeats per case, this build and ${REF} alternating...\n`);
    for (let r = 0; r < ROUNDS; r++) {
      // Who goes first alternates, so drift within a round falls on both alike.
      const order: ('this' | 'prev')[] = r % 2 === 0 ? ['this', 'prev'] : ['prev', 'this'];
      for (const side of order) {
        if (side === 'this') {
          collect(rows, 'this', await runBenchChild<XdpCase[]>(REPO_ROOT, 'xdp', 'benchXdp', [REPEAT, 1]));
        } else if (prev.root && !prevError) {
          try {
            collect(rows, 'prev', await runBenchChild<XdpCase[]>(prev.root, 'xdp', 'benchXdp', [REPEAT, 1]));
          } catch (err) {
            prevError = `its bench failed: ${err instanceof Error ? err.message : String(err)}`;
            process.stdout.write(`  ${REF}: ${prevError}\n`);
          }
        }
      }
      process.stdout.write(`  round ${r + 1}/${ROUNDS} done\n`);
    }
  } finally {
    removeRef(REPO_ROOT, prev);
  }
  const prevOk = prevError === null;
  if (!prevOk) for (const row of rows.values()) row.prev = null;
  const xdp = xdpTable([...rows.values()], prev, prevOk);
  process.stdout.write(`${xdp}\n\nTC enforcement: ${ROUNDS} rounds x ${TC_REPEAT} repeats per case, spak_server_tc and the bare TC program interleaved...\n`);
  const tc = tcTable(await runBenchChild<TcCase[]>(REPO_ROOT, 'tc', 'benchTc', [TC_REPEAT, ROUNDS]));
  process.stdout.write(`${tc}\n\nconnect(): ${CONNECT_ROUNDS} rounds x ${CONNECTS} connects over veth, spak / bare hooks / nothing alternating...\n`);
  const conn = await benchConnect(CONNECTS, CONNECT_ROUNDS);
  const connect = connectTable(conn);
  process.stdout.write(`${connect}\n\nsweep: ${FLOWS} flows, ${SWEEPS} sweeps...\n`);
  const sw = await runBenchChild<SweepResult>(REPO_ROOT, 'sweep', 'benchSweep', [FLOWS, SWEEPS]);
  const sweep = sweepTable(sw);
  process.stdout.write(`${sweep}\n\nknock: ${KNOCKS} knocks, HPKE ${HPKE_SECONDS} s, a ${KNOCK_FLOOD_SECONDS} s garbage flood with ${KNOCK_FLOOD_KNOCKS} knocks...\n`);
  const hpke = {
    node: await runBenchChild<HpkeRate>(REPO_ROOT, 'hpke', 'hpkeOpensPerSecond', ['node', HPKE_SECONDS]),
    stock: await runBenchChild<HpkeRate>(REPO_ROOT, 'hpke', 'hpkeOpensPerSecond', ['stock', HPKE_SECONDS]),
    knock: await runBenchChild<HpkeRate>(REPO_ROOT, 'hpke', 'knockOpensPerSecond', [HPKE_SECONDS]),
  };
  const kn = await runBenchChild<KnockBenchResult>(REPO_ROOT, 'knock', 'benchKnock', [KNOCKS, KNOCK_FLOOD_SECONDS, KNOCK_FLOOD_KNOCKS]);
  const knock = knockTable(kn, hpke);
  process.stdout.write(`${knock}\n`);

  const prevText = prevOk
    ? `the build of \`${REF}\` (${prev.commit}, "${prev.subject}")${prev.warning ? `; ${prev.warning}` : ''}`
    : `no previous build: \`${REF}\`${prev.commit ? ` (${prev.commit})` : ''} could not be measured (${prevError?.split('\n')[0]})`;
  const md = `# Benchmarks

Written by \`make bench\` (bench/run.ts) on ${new Date().toISOString()}, kernel ${os.release()},
${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}. Timings on this machine are noisy: every figure
is paired with its baseline measured in the same run, and each value is a median over rounds.
Compared with: ${prevText}.

## XDP cost per packet (BPF_PROG_TEST_RUN, ${REPEAT} repeats per round, ${ROUNDS} rounds)

Each round runs this build's bench/xdp.ts and the previous build's own copy (checked out and built
in a temporary git worktree, its maps filled by its own daemon and wire code) in fresh child
processes, alternating which goes first. Each also runs a bare \`return XDP_PASS\` program
(bpf/baseline.bpf.c) on the same packets, interleaved case by case; "bare XDP_PASS ns" is the
median of all those samples, and the deltas are taken from it. The ns figures are the kernel's
own (whole ns per run, the median over rounds); the targets are judged on them. The wall-timed
column times the whole call from user space: finer than a whole ns, with the test-run loop's
per-run overhead on every side. Cases present in only one build are marked so.

"valid SYN, same source again" repeats one SYN: after the first run it is a same-source
retransmit. "valid SYN, first sight" runs 20000 different valid SYNs once each (new replay entry,
new flow, cold cache lines); the kernel times each single run, and the bare program is run the
same way on the same packets. "established-flow ACK" belongs to the flow the warm-up valid SYN
opened through the program.

${xdp}

## TC enforcement cost per packet (BPF_PROG_TEST_RUN, ${TC_REPEAT} repeats per round, ${ROUNDS} rounds)

\`--enforcement tc\`: the same verdict as the XDP program, at TC ingress (bench/tc.ts). The SYN-mode
cases above run through \`spak_server_tc\` and through a bare \`return TC_ACT_OK\` program
(bpf/baseline.bpf.c), interleaved case by case, this build only; medians over rounds of the
kernel's ns per run. Only the ratio and the delta over the bare program carry over to another machine.

${tc}

## connect() latency over veth (${CONNECT_ROUNDS} rounds x ${CONNECTS} connects)

Two network namespaces joined by a veth pair, a TCP listener on the server side, sequential
connect()+close from the client side. Each round measures three configurations, each taking
every position in turn: spak (\`spak server\` at XDP on the server's veth, ${conn.spakXdpMode || '?'} mode, and
\`spak client\` at TC egress on the client's), bare programs on the same hooks
(\`baseline_xdp_pass\` at XDP, ${conn.bareXdpMode || '?'} mode, and \`baseline_tc_ok\` at TC egress, attached
through src/bpf/libbpf.ts), and nothing attached. spak / bare hooks is what spak itself adds.

${connect}

## Flow sweep (${FLOWS} flows)

The server loaded with its own code; ${FLOWS} distinct valid tagged SYNs run through its XDP
program (BPF_PROG_TEST_RUN), which records the flows; then \`server.sweep()\` timed ${SWEEPS} times
in CPU time of the process (user + system), as a share of one core at the daemon's interval.

${sweep}

## Knock mode (${KNOCKS} knocks over veth, HPKE ${HPKE_SECONDS} s, a ${KNOCK_FLOOD_SECONDS} s garbage flood)

\`spak server\` (XDP ${kn.xdpMode} mode) with a knock section in the namespace lab, a bundle made by
\`spak keygen\`. Knock-to-open: each knock from a fresh source address (an alias on the client's
eth0) and port, timed from sending it to the first TCP connect() that succeeds, with attempts
every ~250 µs (a dropped SYN's socket is abandoned, not retransmitted); the client's driver
spins one of the machine's cores meanwhile. HPKE: bench/hpke.ts in a child process, opens per
CPU-second of that process. Flood: a third host floods the knock port while the client keeps
knocking; the daemon's CPU is its utime + stime from /proc/<pid>/stat.

${knock}
`;
  writeFileSync(path.join(REPO_ROOT, 'BENCHMARKS.md'), md);
  process.stdout.write('wrote BENCHMARKS.md\n');
}

function tcTable(cases: TcCase[]): string {
  const lines = ['| case (TC ingress) | spak_server_tc ns | bare TC_ACT_OK ns | delta (ns) | ratio | verdict |', '|---|---|---|---|---|---|'];
  for (const c of cases)
    lines.push(`| ${c.name} | ${c.nsPerPacket} | ${c.baselineNs} | ${c.deltaNs >= 0 ? '+' : ''}${c.deltaNs} | ${c.ratio.toFixed(2)}x | ${c.verdict === 0 ? 'ok' : c.verdict === 2 ? 'shot' : String(c.verdict)} |`);
  return lines.join('\n');
}

main().catch((err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
