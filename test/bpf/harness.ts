// Shared harness for the eBPF program tests: loads the compiled objects, fills their maps through
// the daemons' own writers (src/server/, src/client/client.ts), runs frames through
// BPF_PROG_TEST_RUN and reports the verdict together with the single reason counter that moved.
// Needs root and `make bpf`.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { BpfObject, testRun, type BpfMap, type BpfProgram } from '../../src/bpf/libbpf.js';
import { writeTimeConfig } from '../../src/bpf/clock.js';
import { readCounters } from '../../src/bpf/counters.js';
import { objectPath } from '../../src/bpf/object-files.js';
import { writeTargets } from '../../src/client/client.js';
import { DestCounterIndex } from '../../src/server/destcounters.js';
import { checkConfig, type Enforcement, type ProgramConfig } from '../../src/server/options.js';
import { ServerProgram } from '../../src/server/program.js';
import { testEnforcement } from '../enforcement.js';
import { CLIENT_REASON_NAMES, SERVER_REASON_NAMES, type ClientReason, type ServerReason } from '../../src/wire/reasons.js';
import { timeStepAt, type TagInputFields } from '../../src/wire/option.js';
import { computeTag, encodeOption, type SpakOption } from '../support/option.js';
import { buildTcp, linuxSynOptions, type TcpParams } from '../support/packet.js';
import { serverTestConfig } from '../support/server-options.js';

export const XDP_ABORTED = 0;
export const XDP_DROP = 1;
export const XDP_PASS = 2;
export const XDP_TX = 3;
export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_UNSPEC = -1;

export const NS_PER_S = 1_000_000_000n;

/** The two keys the packet matrices load: ids 1 and 7, both valid at once (rotation). */
export const KEY1 = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
export const KEY7 = Buffer.from('f0e1d2c3b4a5968778695a4b3c2d1e0f', 'hex');


/** Open and load build/<name>.bpf.o; the program is looked up by its C function name. */
export function loadProgram(name: string, progName: string): { obj: BpfObject; prog: BpfProgram } {
  const obj = BpfObject.open(objectPath(name));
  try {
    obj.load();
    return { obj, prog: obj.program(progName) };
  } catch (err) {
    obj.close();
    throw err;
  }
}

/** Deletes every entry of a hash map. */
function clearHash(map: BpfMap): void {
  // keys() walks with get_next_key; deleting afterwards keeps that walk simple.
  for (const key of map.keys()) map.delete(key);
}

/**
 * Runs frame through prog and returns the retval, the output frame and the one counter that
 * moved: the diff of every counter before and after must be exactly one reason, by exactly one.
 */
function runCounted<R extends string>(
  prog: BpfProgram, counters: BpfMap, names: readonly R[], frame: Buffer,
): { retval: number; reason: R; dataOut: Buffer } {
  const before = readCounters(counters, names);
  const { retval, dataOut } = testRun(prog, frame);
  const after = readCounters(counters, names);
  const moved = names.filter((n) => after[n] !== before[n]);
  assert.equal(moved.length, 1, `exactly one reason counter must move, got: ${moved.map((n) => `${n} +${after[n] - before[n]}`).join(', ') || 'none'}`);
  const reason = moved[0]!;
  assert.equal(after[reason] - before[reason], 1n, `counter ${reason} must move by exactly 1`);
  return { retval, reason, dataOut };
}

/* ---- time ---- */

/**
 * Waits, if needed, until now is safely inside a time step (at least 100 ms after its start and
 * marginMs before its end), so the step TypeScript computes is the one the program computes from
 * bpf_ktime_get_coarse_ns() + clock offset. Returns that step.
 */
export async function settledStep(stepSeconds: number, marginMs = 1000): Promise<number> {
  const stepMs = stepSeconds * 1000;
  for (;;) {
    const now = Date.now();
    const into = now % stepMs;
    if (into < 100) await sleep(100 - into + 5);
    else if (stepMs - into < marginMs) await sleep(stepMs - into + 105);
    else return timeStepAt(now, stepSeconds);
  }
}

/* ---- server ---- */

export interface ProtectEntry {
  address: string;
  port: number;
  bindSource?: boolean;
  dialAddress?: string;
  dialPort?: number;
  protocol?: 'tcp' | 'udp';
}

export interface ServerSetup {
  keys: { id: number; key: Buffer }[];
  protect: ProtectEntry[];
  stepSeconds?: number;
  stepWindow?: number;
  flowIdleSeconds?: number;
  flowFinSeconds?: number;
  /** Drop SYNs / datagrams to closed ports of protected addresses (bpf/spak_stealth.h). */
  stealth?: boolean;
  stealthUdp?: boolean;
}

export interface ServerRun {
  /** XDP_PASS or XDP_DROP in either mode: the TC program's TC_ACT_OK / TC_ACT_SHOT are reported as these. */
  verdict: number;
  reason: ServerReason;
}

/**
 * server.bpf.o loaded once through the daemon's own code (ServerProgram.load), configured
 * through its own writer (ServerProgram.configure, from a checkConfig'd value): the maps hold
 * exactly what the daemon would write, the per-port fast path included. The program is the one
 * of the file's enforcement mode (test/enforcement.ts): spak_server (XDP) or spak_server_tc (sched_cls).
 */
export class ServerHarness {
  readonly program: ServerProgram;
  readonly enforcement: Enforcement;
  readonly prog: BpfProgram;
  readonly config: BpfMap;
  readonly flows: BpfMap;
  readonly replay: BpfMap;
  readonly counters: BpfMap;
  #stepSeconds = 30;
  /** The configuration last written; update() changes parts of it, as the daemon's reload would. */
  #settings: ProgramConfig = serverTestConfig({ keys: [{ id: 1, key: KEY1 }] });
  /** Counter slots stay with their destination across configurations, as in the daemon. */
  #counterIndex = new DestCounterIndex();

  constructor(capacity: { replay?: number; flows?: number } = {}, enforcement: Enforcement = testEnforcement()) {
    this.enforcement = enforcement;
    this.program = ServerProgram.load({ enforcement, replayCapacity: capacity.replay, flowCapacity: capacity.flows });
    this.prog = this.program.program;
    this.config = this.program.map('spak_config');
    this.flows = this.program.map('spak_flows');
    this.replay = this.program.map('spak_replay');
    this.counters = this.program.map('spak_server_counters');
    // The clock and time step only: nothing is protected until configure().
    writeTimeConfig(this.config, this.#settings);
  }

  /** Replaces config, keys and protected destinations (what the daemon writes at start); knock and always-allow stay. */
  configure(s: ServerSetup): void {
    this.#stepSeconds = s.stepSeconds ?? 30;
    this.update({
      keys: s.keys,
      protect: s.protect,
      stepSeconds: this.#stepSeconds,
      stepWindow: s.stepWindow ?? 1,
      flowIdleSeconds: s.flowIdleSeconds ?? 300,
      flowFinSeconds: s.flowFinSeconds ?? 10,
      stealth: s.stealth ?? false,
      stealthUdp: s.stealthUdp ?? false,
    });
    this.reset();
  }

  /** Changes part of the configuration and writes all of it, checked first as the daemon checks it. */
  update(u: Partial<ProgramConfig>): void {
    const next = checkConfig({ ...this.#settings, ...u });
    this.program.configure(next, this.#counterIndex);
    this.#settings = next;
  }

  get stepSeconds(): number {
    return this.#stepSeconds;
  }

  /** Forgets every flow and replay entry (counters are diffed, never reset). */
  reset(): void {
    clearHash(this.flows);
    clearHash(this.replay);
  }

  /**
   * One frame through the server program. The server never rewrites: the output must equal the input.
   * At TC the verdict must be TC_ACT_OK or TC_ACT_SHOT, at XDP XDP_PASS or XDP_DROP.
   */
  run(frame: Buffer): ServerRun {
    const { retval, reason, dataOut } = runCounted(this.prog, this.counters, SERVER_REASON_NAMES, frame);
    assert.ok(dataOut.equals(frame), `the ${this.enforcement} server must not modify the frame`);
    const [pass, drop] = this.enforcement === 'tc' ? [TC_ACT_OK, TC_ACT_SHOT] : [XDP_PASS, XDP_DROP];
    assert.ok(retval === pass || retval === drop, `unexpected ${this.enforcement} verdict ${retval}`);
    return { verdict: retval === pass ? XDP_PASS : XDP_DROP, reason };
  }

  /** Asserts the verdict follows from the reason (pass_* -> XDP_PASS, drop_* -> XDP_DROP) and equals the expected one. */
  expect(frame: Buffer, reason: ServerReason): ServerRun {
    const r = this.run(frame);
    const verdict = reason.startsWith('pass_') ? XDP_PASS : XDP_DROP;
    assert.deepEqual(r, { verdict, reason }, `expected ${reason} (${verdict === XDP_PASS ? 'XDP_PASS' : 'XDP_DROP'})`);
    return r;
  }

  close(): void {
    this.program.close();
  }
}

/* ---- client ---- */

export interface ClientSetup {
  targets: { address: string; port: number; keyId: number; key: Buffer; bindSource?: boolean }[];
  stepSeconds?: number;
}

/**
 * client.bpf.o loaded once; configure() writes what SpakClient writes (it has no writer of
 * its own to call without attaching: the encoding below is the same two calls it makes).
 */
export class ClientHarness {
  readonly obj: BpfObject;
  readonly prog: BpfProgram;
  readonly config: BpfMap;
  readonly targets: BpfMap;
  readonly counters: BpfMap;

  constructor() {
    const { obj, prog } = loadProgram('client', 'spak_client');
    this.obj = obj;
    this.prog = prog;
    this.config = obj.map('spak_config');
    this.targets = obj.map('spak_targets');
    this.counters = obj.map('spak_client_counters');
  }

  configure(s: ClientSetup): void {
    writeTimeConfig(this.config, { stepSeconds: s.stepSeconds ?? 30 });
    clearHash(this.targets);
    writeTargets(this.targets, s.targets);
  }

  /** One frame through spak_client (TC): it must always return TC_ACT_UNSPEC (the next filter runs). */
  run(frame: Buffer): { reason: ClientReason; dataOut: Buffer } {
    const { retval, reason, dataOut } = runCounted(this.prog, this.counters, CLIENT_REASON_NAMES, frame);
    assert.equal(retval, TC_ACT_UNSPEC, 'the client program must always return TC_ACT_UNSPEC');
    return { reason, dataOut };
  }

  close(): void {
    this.obj.close();
  }
}

/* ---- frames ---- */

/** A TCP SYN carrying our option: options = before + option(tag over `tag`) + after. */
export interface TaggedSynParams extends Omit<TcpParams, 'options' | 'flags'> {
  key: Buffer;
  keyId: number;
  timeStep: number;
  /** Fields bound into the tag; default: the packet's own dport/seq/daddr. */
  tag?: Partial<TagInputFields>;
  /** Option field overrides (version, exid, len, ...) or a replacement tag. */
  option?: Partial<SpakOption>;
  /** Option bytes before ours; default linuxSynOptions(). */
  before?: Buffer;
  after?: Buffer;
}

export function tagFor(p: TaggedSynParams): Buffer {
  return computeTag(p.key, {
    keyId: p.keyId, dport: p.dport, timeStep: p.timeStep, seq: p.seq, daddr: p.daddr, ...p.tag,
  });
}

/** Tag fields of a source-bound tag for this packet: its own source address. */
export function boundTo(p: Pick<TcpParams, 'saddr'>): Partial<TagInputFields> {
  return { saddr: p.saddr };
}

export function spakOptionFor(p: TaggedSynParams): Buffer {
  return encodeOption({ keyId: p.keyId, timeStep: p.timeStep, tag: tagFor(p), ...p.option });
}

export function taggedSyn(p: TaggedSynParams): Buffer {
  const { key: _k, keyId: _i, timeStep: _t, tag: _g, option: _o, before, after, ...tcp } = p;
  const options = Buffer.concat([before ?? linuxSynOptions(), spakOptionFor(p), after ?? Buffer.alloc(0)]);
  return buildTcp({ ...tcp, flags: { syn: true }, options });
}


