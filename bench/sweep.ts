// The daemon's periodic sweep with many recorded flows (issue 5, section 3: with 250,000 flows it
// must cost under 2 % of one core). The server is loaded with its own code and the flows are
// made the way they are made in service: distinct valid tagged SYNs run through the XDP program
// (BPF_PROG_TEST_RUN), which is the flow table's writer. Then the daemon's sweep (sweepTables) is timed in CPU time
// (process.cpuUsage: user + system of this process) several times.
import { testRun } from '../src/bpf/libbpf.js';
import { sweepIntervalSeconds } from '../src/server/options.js';
import { sweepTables } from '../src/server/sweep.js';
import { timeStepAt } from '../src/wire/option.js';
import { BENCH_FLOW_TIMES, loadTestProgram, serverTestConfig } from '../test/support/server-options.js';
import { computeTag, encodeOption } from '../test/support/option.js';
import { buildTcp, linuxSynOptions } from '../test/support/packet.js';
import { median } from './median.js';

/** The daemon's sweep interval with its default flow settings (src/server/server.ts). */
export const SWEEP_INTERVAL_S = sweepIntervalSeconds(BENCH_FLOW_TIMES);

export interface SweepResult {
  /** Flows asked for, SYNs passed by the program, flows the table holds when sweeping. */
  wantedFlows: number;
  passedSyns: number;
  flows: number;
  fillSeconds: number;
  /** CPU ms per sweep, one per sweep, and their median. */
  cpuMs: number[];
  medianCpuMs: number;
  wallMs: number[];
  /** medianCpuMs as a share of one core at one sweep per SWEEP_INTERVAL_S. */
  corePercent: number;
  /** What the last sweep() said of itself. */
  last: Record<string, number>;
}

const KEY = Buffer.from('112233445566778899aabbccddeeff00', 'hex');
const SERVER = '198.51.100.1';
const PORT = 22;
const PORTS_PER_SOURCE = 60_000;
const XDP_PASS = 2;

/** Source address and port of flow i: 60,000 ports per documentation address. */
function source(i: number): { saddr: string; sport: number } {
  return { saddr: `198.51.100.${10 + Math.floor(i / PORTS_PER_SOURCE)}`, sport: 1024 + (i % PORTS_PER_SOURCE) };
}

export function benchSweep(wantedFlows = 250_000, sweeps = 5): SweepResult {
  if (wantedFlows > PORTS_PER_SOURCE * 240) throw new Error(`at most ${PORTS_PER_SOURCE * 240} flows`);
  // Room for every flow and every tag: both tables sized above what is asked of them. (The
  // capacities are options of the server from issue 5 on; an older server ignores them and
  // keeps its fixed sizes: the number of flows actually held is reported.)
  const capacity = Math.ceil(wantedFlows * 1.25);
  const opts = serverTestConfig({ keys: [{ id: 1, key: KEY }], protect: [{ address: SERVER, port: PORT }], ...BENCH_FLOW_TIMES });
  const server = loadTestProgram(opts, { flowCapacity: capacity, replayCapacity: capacity });
  try {
    const prog = server.program;
    const t0 = process.hrtime.bigint();
    let passed = 0;
    let step = timeStepAt(Date.now(), 30);
    for (let i = 0; i < wantedFlows; i++) {
      if (i % 1000 === 0) step = timeStepAt(Date.now(), 30);
      const seq = (0x1000 + i * 7919) >>> 0;
      const tag = computeTag(KEY, { keyId: 1, dport: PORT, timeStep: step, seq, daddr: SERVER });
      const syn = buildTcp({
        family: 4,
        ...source(i),
        daddr: SERVER,
        dport: PORT,
        seq,
        flags: { syn: true },
        options: Buffer.concat([linuxSynOptions(), encodeOption({ keyId: 1, timeStep: step, tag })]),
      });
      if (testRun(prog, syn).retval === XDP_PASS) passed++;
    }
    const fillSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const flows = server.map('spak_flows').keys().length;
    const cpuMs: number[] = [];
    const wallMs: number[] = [];
    let last: Record<string, number> = {};
    for (let s = 0; s < sweeps; s++) {
      const w0 = process.hrtime.bigint();
      const c0 = process.cpuUsage();
      last = { ...sweepTables(server.maps(['spak_flows', 'spak_replay', 'spak_allow']), opts) };
      const c = process.cpuUsage(c0);
      wallMs.push(Number(process.hrtime.bigint() - w0) / 1e6);
      cpuMs.push((c.user + c.system) / 1000);
    }
    const medianCpuMs = median(cpuMs);
    return {
      wantedFlows,
      passedSyns: passed,
      flows,
      fillSeconds,
      cpuMs,
      medianCpuMs,
      wallMs,
      corePercent: (medianCpuMs / (SWEEP_INTERVAL_S * 1000)) * 100,
      last,
    };
  } finally {
    server.close();
  }
}
