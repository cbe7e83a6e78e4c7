// TC enforcement cost per packet through BPF_PROG_TEST_RUN: spak_server_tc against the bare
// TC_ACT_OK program (bpf/baseline.bpf.c) on the SYN-mode cases of bench/xdp.ts, interleaved case by
// case, medians over rounds. At TC the kernel builds an skb for every run, so only the ratio and the
// delta over the bare program mean anything, and only beside the XDP figures of the same run.
//   node dist/bench/tc.js [repeat] [rounds]
import { BpfObject, testRun } from '../src/bpf/libbpf.js';
import { objectPath } from '../src/bpf/object-files.js';
import { BENCH_FLOW_TIMES, loadTestProgram, serverTestConfig } from '../test/support/server-options.js';
import { median } from './median.js';
import { frames } from './xdp.js';

const KEY = Buffer.from('112233445566778899aabbccddeeff00', 'hex');
const TC_ACT_OK = 0;

export interface TcCase { name: string; nsPerPacket: number; baselineNs: number; ratio: number; deltaNs: number; verdict: number }

export function benchTc(repeat = 1_000_000, rounds = 5): TcCase[] {
  const baselineObj = BpfObject.open(objectPath('baseline'));
  const server = loadTestProgram(serverTestConfig({ keys: [{ id: 1, key: KEY }], ...BENCH_FLOW_TIMES }), { enforcement: 'tc' });
  try {
    baselineObj.load();
    const baseline = baselineObj.program('baseline_tc_ok');
    const prog = server.program;
    const cases = frames();
    // The valid SYN opens the flow the established ACK belongs to; its repeats are same-source retransmits.
    for (const data of Object.values(cases)) testRun(prog, data);
    const ack = testRun(prog, cases['established-flow ACK']!);
    if (ack.retval !== TC_ACT_OK) throw new Error(`established-flow ACK: verdict ${ack.retval}, expected TC_ACT_OK`);
    const samples = new Map<string, { own: number[]; base: number[]; verdict: number }>();
    for (let r = 0; r < rounds; r++)
      for (const [name, data] of Object.entries(cases)) {
        const b = testRun(baseline, data, { repeat });
        const o = testRun(prog, data, { repeat });
        const s = samples.get(name) ?? { own: [], base: [], verdict: o.retval };
        s.own.push(o.durationNs);
        s.base.push(b.durationNs);
        samples.set(name, s);
      }
    return [...samples].map(([name, s]) => {
      const own = median(s.own);
      const base = median(s.base);
      return { name, nsPerPacket: own, baselineNs: base, ratio: own / base, deltaNs: own - base, verdict: s.verdict };
    });
  } finally {
    server.close();
    baselineObj.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const repeat = Number(process.argv[2] ?? 1_000_000);
  const rounds = Number(process.argv[3] ?? 5);
  console.log('| case (TC ingress) | spak_server_tc / bare TC_ACT_OK | delta over bare (ns) | verdict |');
  console.log('|---|---|---|---|');
  for (const c of benchTc(repeat, rounds))
    console.log(`| ${c.name} | ${c.ratio.toFixed(2)}x | ${c.deltaNs.toFixed(0)} | ${c.verdict === TC_ACT_OK ? 'TC_ACT_OK' : c.verdict === 2 ? 'TC_ACT_SHOT' : c.verdict} |`);
}
