// XDP cost per packet through BPF_PROG_TEST_RUN, side by side with a bare XDP_PASS
// program measured in the same rounds. Figures are medians over rounds.
//
// bench/run.ts calls benchXdp(repeat, 1) in a child process per round, for this build and for
// the build of a previous ref (its own copy of this file): keep the export and the case names
// stable so the two sides match by name.
import { BpfObject, testRun, type BpfProgram } from '../src/bpf/libbpf.js';
import { objectPath } from '../src/bpf/object-files.js';
import type { ProgramConfig } from '../src/server/options.js';
import type { ServerProgram } from '../src/server/program.js';
import { BENCH_FLOW_TIMES, loadTestProgram, serverTestConfig } from '../test/support/server-options.js';
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { KnockSealer } from '../src/knock/datagram.js';
import { generateX25519 } from '../src/knock/keys.js';
import { allowSource } from '../src/server/allowlist.js';
import { timeStepAt } from '../src/wire/option.js';
import { computeTag, encodeOption } from '../test/support/option.js';
import { buildTcp, buildUdp, linuxSynOptions } from '../test/support/packet.js';
import { median } from './median.js';
import { knockMapOptions } from '../src/knock/prefilter.js';

export interface XdpCase {
  name: string;
  /** As the kernel reports it (whole ns per run): the figures the targets are judged on. */
  nsPerPacket: number;
  baselineNs: number;
  ratio: number;
  deltaNs: number;
  /** The whole call timed from user space / repeats: finer, but with the per-run overhead in both. */
  wallNs: number | null;
  wallBaselineNs: number | null;
  verdict: number;
}

const KEY = Buffer.from('112233445566778899aabbccddeeff00', 'hex');
const SERVER = '198.51.100.1';
const FIRST_SIGHT_PACKETS = 20_000;
const CLIENT = '198.51.100.2';
const XDP_PASS = 2;
const KNOCK_PORT = 62201;
/** Sources of the knock-mode cases: allowlisted (tcp/22), in the always-allow list, neither. */
const ALLOWLISTED = '198.51.100.4';
const ALWAYS = '203.0.113.9';
const ALWAYS_CIDR = '203.0.113.0/24';
const STRANGER = '198.51.100.6';
const KNOCK_SERVER = generateX25519();
const KNOCK_CLIENT = generateX25519();

/** Knock mode's cases (issue 6): the knock port, and the allowlist and always-allow lookups of a protected port. */
async function knockFrames(): Promise<Record<string, Buffer>> {
  const knock = await new KnockSealer(KNOCK_CLIENT.privateKey, KNOCK_SERVER.publicKey)
    .seal({ serverAddr: SERVER, allowAddr: null, durationS: 0, open: [{ proto: 'tcp', port: 22 }] });
  const udp = (payload: Buffer) => buildUdp({ family: 4, saddr: CLIENT, daddr: SERVER, sport: 50000, dport: KNOCK_PORT, payload });
  const syn = (saddr: string) => buildTcp({ family: 4, saddr, daddr: SERVER, sport: 40001, dport: 22, seq: 0x2468ace0, flags: { syn: true }, options: linuxSynOptions() });
  return {
    'knock port, garbage (152 random bytes)': udp(randomBytes(knock.length)),
    'knock port, valid knock': udp(knock),
    'allowlisted SYN (knock allowlist hit)': syn(ALLOWLISTED),
    'always-allow hit (SYN, LPM trie)': syn(ALWAYS),
    'protected port miss (untagged SYN, no allowlist, no always-allow)': syn(STRANGER),
  };
}

export function frames(): Record<string, Buffer> {
  const step = timeStepAt(Date.now(), 30);
  const seq = 0x12345678;
  const tag = computeTag(KEY, { keyId: 1, dport: 22, timeStep: step, seq, daddr: SERVER });
  const opt = encodeOption({ keyId: 1, timeStep: step, tag });
  const badTag = Buffer.from(tag);
  badTag[0]! ^= 1;
  const base = { family: 4 as const, saddr: CLIENT, daddr: SERVER, sport: 40000, seq };
  return {
    'unprotected packet (TCP ACK to :80)': buildTcp({ ...base, dport: 80, ack: 1, flags: { ack: true }, payload: Buffer.alloc(64) }),
    'valid SYN, same source again (retransmit)': buildTcp({ ...base, dport: 22, flags: { syn: true }, options: Buffer.concat([linuxSynOptions(), opt]) }),
    'invalid SYN (bad tag)': buildTcp({
      ...base,
      dport: 22,
      flags: { syn: true },
      options: Buffer.concat([linuxSynOptions(), encodeOption({ keyId: 1, timeStep: step, tag: badTag })]),
    }),
    'established-flow ACK': buildTcp({ ...base, dport: 22, seq: seq + 1, ack: 1, flags: { ack: true }, payload: Buffer.alloc(64) }),
  };
}

/**
 * Stealth (bpf/spak_stealth.h): SYNs and ACKs to ports of the protected address that no
 * destination protects, to a port with a listener and to one without, on the SYN-mode server
 * (stealth off) and on the same build with stealth on. The listener is a real socket of this process (the
 * program asks the socket tables of the netns it runs in); the closed port had one a moment ago.
 */
async function stealthFrames(): Promise<{ frames: Record<string, Buffer>; listener: Server }> {
  const listen = () => new Promise<Server>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ host: '::', port: 0, ipv6Only: false }, () => resolve(s));
  });
  const gone = await listen();
  const closed = (gone.address() as AddressInfo).port;
  await new Promise<void>((r) => gone.close(() => r()));
  const listener = await listen();
  const open = (listener.address() as AddressInfo).port;
  const ack = (dport: number) => buildTcp({ family: 4, saddr: CLIENT, daddr: SERVER, sport: 40000, dport, seq: 1, ack: 1, flags: { ack: true }, payload: Buffer.alloc(64) });
  const syn = (dport: number) => buildTcp({ family: 4, saddr: CLIENT, daddr: SERVER, sport: 40002, dport, seq: 0x13579bdf, flags: { syn: true }, options: linuxSynOptions() });
  return {
    listener,
    frames: {
      [STEALTH_CASES.openOff]: syn(open),
      [STEALTH_CASES.openOn]: syn(open),
      [STEALTH_CASES.closedOff]: syn(closed),
      [STEALTH_CASES.closedOn]: syn(closed),
      [STEALTH_CASES.ackOn]: ack(open),
      [STEALTH_CASES.ackClosedOn]: ack(closed),
    },
  };
}

/** Stealth case names; "... stealth on" runs on the stealth server, the rest on the SYN-mode one. */
export const STEALTH_CASES = {
  openOff: 'unprotected SYN to a listening port, stealth off',
  openOn: 'unprotected SYN with stealth on (listening port: socket found, passes)',
  closedOff: 'closed-port SYN, stealth off (passes: the kernel would RST)',
  closedOn: 'stealth closed-port SYN (socket lookup misses, dropped)',
  ackOn: 'unprotected ACK with stealth on (listening port: socket found, passes)',
  ackClosedOn: 'stealth closed-port ACK (socket lookup misses, dropped)',
} as const;
const STEALTH_ON = new Set<string>([STEALTH_CASES.openOn, STEALTH_CASES.closedOn, STEALTH_CASES.ackOn, STEALTH_CASES.ackClosedOn]);

/** Runs every case `rounds` times with `repeat` packets each, baseline interleaved. */
export async function benchXdp(repeat = 10_000_000, rounds = 5): Promise<XdpCase[]> {
  const knockCases = await knockFrames();
  const stealth = await stealthFrames();
  const baselineObj = BpfObject.open(objectPath('baseline'));
  const settings: ProgramConfig = serverTestConfig({ keys: [{ id: 1, key: KEY }], protect: [{ address: SERVER, port: 22 }], ...BENCH_FLOW_TIMES });
  // SYN mode alone (its drop paths never ask the allowlists), and with knock mode and
  // always-allow configured for the knock-mode cases: each case runs on its own program.
  const loaded = (c: ProgramConfig) => loadTestProgram(c);
  const programs: ServerProgram[] = [];
  try {
    const server = loaded(settings);
    programs.push(server);
    const listServer = loaded({
      ...settings,
      // A rate no repeat count reaches: the cases time the lookups, not the rate limit's drop.
      knock: knockMapOptions({ port: KNOCK_PORT, clients: [KNOCK_CLIENT.publicKey], serverKey: KNOCK_SERVER.privateKey, rate: 1e9, burst: 1_000_000 }),
      alwaysAllow: [ALWAYS_CIDR],
    });
    programs.push(listServer);
    const stealthServer = loaded({ ...settings, stealth: true, stealthUdp: true });
    programs.push(stealthServer);
    baselineObj.load();
    const baseline = baselineObj.program('baseline_xdp_pass');
    const synProg = server.program;
    const listProg = listServer.program;
    allowSource(listServer.map('spak_allow'), { addr: ALLOWLISTED, proto: 'tcp', port: 22, expiresNs: process.hrtime.bigint() + 3_600_000_000_000n });
    const stealthProg = stealthServer.program;
    const cases = { ...frames(), ...knockCases, ...stealth.frames };
    const progOf = (name: string) => (name in knockCases ? listProg : STEALTH_ON.has(name) ? stealthProg : synProg);
    const samples = new Map<string, { own: number[]; base: number[]; ownWall: number[]; baseWall: number[]; verdict: number }>();
    // The kernel reports whole ns per run; timing the whole call as well gives a finer figure
    // (the syscall itself is a few µs over millions of repeats).
    const run = (p: BpfProgram, data: Buffer) => {
      const t0 = process.hrtime.bigint();
      const r = testRun(p, data, { repeat });
      const wall = Number(process.hrtime.bigint() - t0) / repeat;
      return { retval: r.retval, durationNs: r.durationNs, wall };
    };
    // Warm up: the first valid SYN records the tag and opens the flow the established ACK
    // belongs to (the program is the flow table's writer); repeats are then same-source
    // retransmits.
    for (const [name, data] of Object.entries(cases)) run(progOf(name), data);
    const ack = testRun(synProg, cases['established-flow ACK']!);
    if (ack.retval !== XDP_PASS) throw new Error(`established-flow ACK: verdict ${ack.retval} after the valid SYN, expected XDP_PASS`);
    const XDP_DROP = 1;
    const want: Record<string, number> = {
      'knock port, garbage (152 random bytes)': XDP_DROP,
      'knock port, valid knock': XDP_PASS,
      'allowlisted SYN (knock allowlist hit)': XDP_PASS,
      'always-allow hit (SYN, LPM trie)': XDP_PASS,
      'protected port miss (untagged SYN, no allowlist, no always-allow)': XDP_DROP,
      [STEALTH_CASES.openOff]: XDP_PASS,
      [STEALTH_CASES.openOn]: XDP_PASS,
      [STEALTH_CASES.closedOff]: XDP_PASS,
      [STEALTH_CASES.closedOn]: XDP_DROP,
      [STEALTH_CASES.ackOn]: XDP_PASS,
      [STEALTH_CASES.ackClosedOn]: XDP_DROP,
    };
    for (const [name, v] of Object.entries(want)) {
      const got = testRun(progOf(name), cases[name as keyof typeof cases]!).retval;
      if (got !== v) throw new Error(`${name}: verdict ${got}, expected ${v}`);
    }
    for (let r = 0; r < rounds; r++) {
      for (const [name, data] of Object.entries(cases)) {
        const b = run(baseline, data);
        const res = run(progOf(name), data);
        const s = samples.get(name) ?? { own: [], base: [], ownWall: [], baseWall: [], verdict: res.retval };
        s.own.push(res.durationNs);
        s.base.push(b.durationNs);
        s.ownWall.push(res.wall);
        s.baseWall.push(b.wall);
        samples.set(name, s);
      }
    }
    // A first-sight valid SYN (new tag, new replay entry, new flow) cannot be repeated: each
    // packet runs once, timed by the kernel, with the baseline run the same way on it.
    const firsts = { own: [] as number[], base: [] as number[], ownWall: [] as number[], baseWall: [] as number[], verdict: -1 };
    const step = timeStepAt(Date.now(), 30);
    for (let i = 0; i < FIRST_SIGHT_PACKETS; i++) {
      const seq = (0x1000 + i * 7919) >>> 0;
      const tag = computeTag(KEY, { keyId: 1, dport: 22, timeStep: step, seq, daddr: SERVER });
      const syn = buildTcp({
        family: 4, saddr: CLIENT, daddr: SERVER, sport: 1024 + (i % 60000), dport: 22, seq, flags: { syn: true },
        options: Buffer.concat([linuxSynOptions(), encodeOption({ keyId: 1, timeStep: step, tag })]),
      });
      firsts.base.push(testRun(baseline, syn).durationNs);
      const r = testRun(synProg, syn);
      firsts.own.push(r.durationNs);
      firsts.verdict = r.retval;
    }
    samples.set('valid SYN, first sight (1 run per packet)', firsts);
    return [...samples].map(([name, s]) => {
      const own = median(s.own);
      const base = median(s.base);
      const wallNs = s.ownWall.length ? median(s.ownWall) : null;
      const wallBaselineNs = s.baseWall.length ? median(s.baseWall) : null;
      return { name, nsPerPacket: own, baselineNs: base, ratio: own / base, deltaNs: own - base, wallNs, wallBaselineNs, verdict: s.verdict };
    });
  } finally {
    for (const p of programs) p.close();
    baselineObj.close();
    await new Promise<void>((r) => stealth.listener.close(() => r()));
  }
}
