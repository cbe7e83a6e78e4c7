// make bench: measures, prints, and writes BENCHMARKS.md. Every figure is paired with its
// baseline measured in the same run; targets are reported, never asserted.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../src/bpf/objects.js';
import { benchXdp, type XdpCase } from './xdp.js';
import { benchConnect, type ConnectResult } from './connect.js';

const REPEAT = Number(process.env.SPAK_BENCH_REPEAT ?? 1_000_000);
const ROUNDS = Number(process.env.SPAK_BENCH_ROUNDS ?? 5);
const CONNECTS = Number(process.env.SPAK_BENCH_CONNECTS ?? 300);

interface Target {
  text: string;
  met: (c: XdpCase) => boolean;
}

const TARGETS: Record<string, Target> = {
  'unprotected packet (TCP ACK to :80)': { text: '<= 1.2x baseline', met: (c) => c.ratio <= 1.2 },
  'valid SYN, same source again (retransmit)': { text: '<= baseline + 40 ns', met: (c) => c.deltaNs <= 40 },
  'valid SYN, first sight (1 run per packet)': { text: '<= baseline + 40 ns', met: (c) => c.deltaNs <= 40 },
  'invalid SYN (bad tag)': { text: '<= baseline + 40 ns', met: (c) => c.deltaNs <= 40 },
  'established-flow ACK': { text: '<= baseline + 15 ns', met: (c) => c.deltaNs <= 15 },
};

const VERDICT = ['aborted', 'drop', 'pass', 'tx', 'redirect'];

function xdpTable(cases: XdpCase[]): string {
  const rows = cases.map((c) => {
    const t = TARGETS[c.name];
    return `| ${c.name} | ${VERDICT[c.verdict] ?? c.verdict} | ${c.nsPerPacket.toFixed(1)} | ${c.baselineNs.toFixed(1)} | ${c.ratio.toFixed(2)}x | ${c.deltaNs >= 0 ? '+' : ''}${c.deltaNs.toFixed(1)} | ${t?.text ?? ''} | ${t ? (t.met(c) ? 'met' : 'NOT met') : ''} |`;
  });
  return [
    '| case | verdict | spak ns/packet | bare XDP_PASS ns/packet | ratio | delta ns | target | |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}

function connectTable(r: ConnectResult): string {
  const range = (x: [number, number]) => `${x[0].toFixed(1)} – ${x[1].toFixed(1)}`;
  return [
    '| | median connect() µs | round medians µs (min – max) | rounds |',
    '|---|---|---|---|',
    `| without spak | ${r.withoutUs.toFixed(1)} | ${range(r.withoutRange)} | ${r.rounds} x ${r.connectsPerRound} |`,
    `| with spak (client TC + server XDP) | ${r.withUs.toFixed(1)} | ${range(r.withRange)} | ${r.rounds} x ${r.connectsPerRound} |`,
    `| ratio | ${r.ratio.toFixed(3)} (target <= 1.05: ${r.ratio <= 1.05 ? 'met' : 'NOT met'}) | | |`,
  ].join('\n');
}

async function main(): Promise<void> {
  process.stdout.write(`XDP: ${ROUNDS} rounds x ${REPEAT} repeats per case, baseline interleaved...\n`);
  const cases = benchXdp(REPEAT, ROUNDS);
  const xdp = xdpTable(cases);
  process.stdout.write(`${xdp}\n\nconnect(): ${CONNECTS} connects per round over veth...\n`);
  const conn = await benchConnect(CONNECTS);
  const connect = connectTable(conn);
  process.stdout.write(`${connect}\n`);

  const md = `# Benchmarks

Written by \`make bench\` (bench/run.ts) on ${new Date().toISOString()}, kernel ${os.release()},
${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}. Timings on this machine are noisy: every spak
figure is paired with its baseline measured in the same run, and each value is the median of
${ROUNDS} rounds.

## XDP cost per packet (BPF_PROG_TEST_RUN, ${REPEAT} repeats per round)

The baseline is a bare \`return XDP_PASS\` program (bpf/baseline.bpf.c) run on the same packet in
the same round. "valid SYN" repeats one SYN, so after the first run it is a same-source retransmit:
full option walk, SipHash and replay-table lookup, and a flow-table update.

${xdp}

## connect() latency over veth

Two network namespaces joined by a veth pair, a TCP listener on the server side, sequential
connect()+close from the client side. Rounds alternate without and with spak (\`spak server\` at
XDP on the server's veth, \`spak client\` at TC egress on the client's).

${connect}
`;
  writeFileSync(path.join(REPO_ROOT, 'BENCHMARKS.md'), md);
  process.stdout.write('wrote BENCHMARKS.md\n');
}

main().catch((err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
