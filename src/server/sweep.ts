// The daemon's periodic sweep of the two tables the XDP program fills but never empties.
// Flows: the program cannot tell a blind FIN/RST from a real one, so only this sweep ends
// a flow, and only when the kernel has no socket for it. Replay: tags are expired by time
// step, never by recency, so a captured SYN stays refused for as long as its tag is valid.
// Cost scales with the table, not with the sockets: one batched read of each map, and the
// kernel's socket tables are read only when some flow is a candidate for removal.
import type { BpfMap } from '../bpf/libbpf.js';
import { decodeFlow, encodeFlow, encodeFlowKey, SPAK_FLOW_CLOSING, SPAK_FLOW_OPEN } from '../wire/layout.js';
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
}

/** Key of the flow table for a kernel socket: the flow arrives from its remote end. */
function flowKeyOf(s: KernelSocket): string {
  return encodeFlowKey({ saddr: s.remoteAddr, daddr: s.localAddr, sport: s.remotePort, dport: s.localPort }).toString('hex');
}

export function sweepFlows(
  flows: BpfMap, t: FlowSweepSettings, sockets: () => KernelSocket[] = allTcpSockets,
): Pick<SweepResult, 'flows' | 'flowsRemoved' | 'flowsReopened' | 'socketChecks'> {
  const { keys, values } = flows.lookupBatch();
  const candidates: number[] = [];
  for (let i = 0; i < keys.length; i++) {
    const v = values[i]!;
    const idle = t.nowS - v.readUInt32LE(0);
    const limit = v.readUInt32LE(4) === SPAK_FLOW_CLOSING ? t.finS : t.idleS;
    if (idle > limit) candidates.push(i);
  }
  const result = { flows: keys.length, flowsRemoved: 0, flowsReopened: 0, socketChecks: candidates.length };
  if (candidates.length === 0) return result;

  const kernel = new Map<string, number>();
  for (const s of sockets()) if (s.state !== TCP_LISTEN && s.state !== TCP_CLOSE) kernel.set(flowKeyOf(s), s.state);
  const gone: Buffer[] = [];
  for (const i of candidates) {
    const key = keys[i]!;
    const f = decodeFlow(values[i]!);
    const socketState = kernel.get(key.toString('hex'));
    if (socketState === undefined) {
      gone.push(Buffer.from(key));
      continue;
    }
    // The socket lives: the flow stays. Closing while the kernel says established: the
    // FIN or RST was not real (a blind injection the TCP stack ignored), so reopen.
    const state = f.state === SPAK_FLOW_CLOSING && socketState === TCP_ESTABLISHED ? SPAK_FLOW_OPEN : f.state;
    if (state !== f.state) result.flowsReopened++;
    try {
      flows.update(Buffer.from(key), encodeFlow({ seenS: t.nowS, state }), 'exist');
    } catch {
      // removed meanwhile (a new SYN replaced it, or another sweep): nothing to keep
    }
  }
  if (gone.length > 0) result.flowsRemoved = flows.deleteBatch(gone);
  return result;
}

/** Removes replay entries whose time step is past the window: their tags no longer verify. */
export function sweepReplay(replay: BpfMap, nowStep: number, window: number): Pick<SweepResult, 'replay' | 'replayRemoved'> {
  const { keys, values } = replay.lookupBatch();
  const stale: Buffer[] = [];
  for (let i = 0; i < keys.length; i++) if (values[i]!.readUInt32LE(20) + window < nowStep) stale.push(Buffer.from(keys[i]!));
  return { replay: keys.length, replayRemoved: stale.length > 0 ? replay.deleteBatch(stale) : 0 };
}
