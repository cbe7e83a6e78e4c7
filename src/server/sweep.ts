// The daemon's periodic sweep of the two tables the XDP program fills but never empties.
// Flows: the program cannot tell a blind FIN/RST from a real one, so only this sweep ends
// a flow, and only when the kernel has no socket for it. Replay: tags are expired by time
// step, never by recency, so a captured SYN stays refused for as long as its tag is valid.
// Cost scales with the table, not with the sockets: one batched read of each map, and the
// kernel's socket tables are read only when some flow is a candidate for removal.
// UDP flows (protected UDP destinations, bpf/spak_udp.h) have no socket to ask: they go
// after idleS of silence. The knock allowlist is swept by sweepAllowlist (allowlist.ts).
import type { BpfMap } from '../bpf/libbpf.js';
import { monotonicNs, monotonicSeconds } from '../bpf/clock.js';
import { timeStepAt } from '../wire/option.js';
import { sweepAllowlist } from './allowlist.js';
import type { MapSet } from './maps.js';
import {
  encodeFlow,
  encodeFlowKey,
  FLOW_KEY_OFF_PROTO,
  IPPROTO_UDP,
  SPAK_FLOW_CLOSING,
  SPAK_FLOW_OPEN,
  type SpakFlow,
} from '../wire/layout.js';
import { allTcpSockets, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, type KernelSocket } from './seed.js';

export interface FlowSweepSettings {
  /** The flow clock now (spak_config.flow_clock_s as last written). */
  nowS: number;
  /** An open flow idle this long without a local socket is removed. */
  idleS: number;
  /** A closing flow idle this long without a local socket is removed. */
  finS: number;
}

export interface SweepResult {
  flows: number;
  flowsRemoved: number;
  flowsReopened: number;
  /** Flows that were checked against the kernel's sockets (candidates for removal). */
  socketChecks: number;
  replay: number;
  replayRemoved: number;
  /** Expired knock allowlist entries removed. */
  allowRemoved: number;
}

/** Key of the flow table for a kernel socket: the flow arrives from its remote end. */
function flowKeyOf(s: KernelSocket): string {
  return encodeFlowKey({ saddr: s.remoteAddr, daddr: s.localAddr, sport: s.remotePort, dport: s.localPort }).toString('hex');
}

export function sweepFlows(
  flows: BpfMap, t: FlowSweepSettings, sockets: () => KernelSocket[] = allTcpSockets,
): Pick<SweepResult, 'flows' | 'flowsRemoved' | 'flowsReopened' | 'socketChecks'> {
  // Values are read in place in the batch buffers; only candidates get buffers of their own.
  const candidates: { key: Buffer; flow: SpakFlow }[] = [];
  const silentUdp: Buffer[] = [];
  let total = 0;
  for (const chunk of flows.lookupChunks()) {
    const keySize = chunk.keys.length / chunk.count;
    const valueSize = chunk.values.length / chunk.count;
    for (let i = 0; i < chunk.count; i++) {
      const seenS = chunk.values.readUInt32LE(i * valueSize);
      const state = chunk.values.readUInt32LE(i * valueSize + 4);
      if (chunk.keys[i * keySize + FLOW_KEY_OFF_PROTO] === IPPROTO_UDP) {
        if (t.nowS - seenS > t.idleS) silentUdp.push(Buffer.from(chunk.keys.subarray(i * keySize, (i + 1) * keySize)));
        continue;
      }
      if (t.nowS - seenS > (state === SPAK_FLOW_CLOSING ? t.finS : t.idleS))
        candidates.push({ key: Buffer.from(chunk.keys.subarray(i * keySize, (i + 1) * keySize)), flow: { seenS, state } });
    }
    total += chunk.count;
  }
  const result = { flows: total, flowsRemoved: 0, flowsReopened: 0, socketChecks: candidates.length };
  if (silentUdp.length > 0) result.flowsRemoved += flows.deleteBatch(silentUdp);
  if (candidates.length === 0) return result;

  const kernel = new Map<string, number>();
  for (const s of sockets()) if (s.state !== TCP_LISTEN && s.state !== TCP_CLOSE) kernel.set(flowKeyOf(s), s.state);
  const gone: Buffer[] = [];
  for (const { key, flow: f } of candidates) {
    const socketState = kernel.get(key.toString('hex'));
    if (socketState === undefined) {
      gone.push(key);
      continue;
    }
    // The socket lives: the flow stays. Closing while the kernel says established: the
    // FIN or RST was not real (a blind injection the TCP stack ignored), so reopen.
    const state = f.state === SPAK_FLOW_CLOSING && socketState === TCP_ESTABLISHED ? SPAK_FLOW_OPEN : f.state;
    if (state !== f.state) result.flowsReopened++;
    try {
      flows.update(key, encodeFlow({ seenS: t.nowS, state }), 'exist');
    } catch {
      // removed meanwhile (a new SYN replaced it, or another sweep): nothing to keep
    }
  }
  if (gone.length > 0) result.flowsRemoved += flows.deleteBatch(gone);
  return result;
}

/** Removes replay entries whose time step is past the window: their tags no longer verify. */
export function sweepReplay(replay: BpfMap, nowStep: number, window: number): Pick<SweepResult, 'replay' | 'replayRemoved'> {
  const stale: Buffer[] = [];
  let total = 0;
  for (const chunk of replay.lookupChunks()) {
    const keySize = chunk.keys.length / chunk.count;
    const valueSize = chunk.values.length / chunk.count;
    for (let i = 0; i < chunk.count; i++)
      if (chunk.values.readUInt32LE(i * valueSize + 20) + window < nowStep) stale.push(Buffer.from(chunk.keys.subarray(i * keySize, (i + 1) * keySize)));
    total += chunk.count;
  }
  return { replay: total, replayRemoved: stale.length > 0 ? replay.deleteBatch(stale) : 0 };
}

export interface SweepSettings { flowIdleSeconds: number; flowFinSeconds: number; stepSeconds: number; stepWindow: number }

/** One sweep of the flow, replay and allowlist tables (the daemon runs it every sweepIntervalSeconds). */
export function sweepTables(m: MapSet<'spak_flows' | 'spak_replay' | 'spak_allow'>, o: SweepSettings, nowS = monotonicSeconds()): SweepResult {
  const flows = sweepFlows(m.spak_flows, { nowS, idleS: o.flowIdleSeconds, finS: o.flowFinSeconds });
  const replay = sweepReplay(m.spak_replay, timeStepAt(Date.now(), o.stepSeconds), o.stepWindow);
  const allowRemoved = sweepAllowlist(m.spak_allow, monotonicNs());
  return { ...flows, ...replay, allowRemoved };
}
