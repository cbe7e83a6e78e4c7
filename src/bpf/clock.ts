import type { BpfMap } from './libbpf.js';
import { encodeConfig, SPAK_CFG_STEALTH_SYN, SPAK_CFG_STEALTH_UDP } from '../wire/layout.js';

// The eBPF programs read CLOCK_MONOTONIC (bpf_ktime_get_coarse_ns) and add an offset
// to get unix time; user space keeps that offset current so NTP steps are followed.
/** CLOCK_REALTIME - CLOCK_MONOTONIC in ns (process.hrtime is CLOCK_MONOTONIC on Linux). */
export function realtimeOffsetNs(): bigint {
  const mono = process.hrtime.bigint();
  const real = BigInt(Date.now()) * 1_000_000n;
  return real - mono;
}

/** CLOCK_MONOTONIC now, in ns. */
export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

/** CLOCK_MONOTONIC now, in whole seconds: the flow clock the server's flows record. */
export function monotonicSeconds(): number {
  return Number(process.hrtime.bigint() / 1_000_000_000n);
}

/** What goes into the programs' spak_config besides the clocks. */
export interface TimeSettings {
  stepSeconds: number;
  stepWindow?: number;
  /** Server: drop TCP segments (but RSTs) to closed ports of protected addresses instead of the RST (bpf/spak_stealth.h). */
  stealth?: boolean | undefined;
  /** Server: drop UDP datagrams to closed ports of protected addresses instead of the ICMP error. */
  stealthUdp?: boolean | undefined;
}

const NS = 1_000_000_000n;
/** How often the daemons rewrite the config (NTP may have stepped the clock; the flow clock advances). */
export const CLOCK_REFRESH_MS = 5_000;

/** Writes spak_config (index 0): the current CLOCK_REALTIME - CLOCK_MONOTONIC offset and flow clock. */
export function writeTimeConfig(map: BpfMap, t: TimeSettings): void {
  const value = encodeConfig({
    clockOffsetNs: realtimeOffsetNs(),
    stepNs: BigInt(t.stepSeconds) * NS,
    stepWindow: t.stepWindow ?? 0,
    flowClockS: monotonicSeconds(),
    flags: (t.stealth ? SPAK_CFG_STEALTH_SYN : 0) | (t.stealthUdp ? SPAK_CFG_STEALTH_UDP : 0),
  });
  map.update(Buffer.alloc(4), value);
}

/** Rewrites the config every CLOCK_REFRESH_MS; the timer does not keep the process alive. */
export function keepClockCurrent(map: BpfMap, t: TimeSettings, onError: (err: unknown) => void): NodeJS.Timeout {
  const timer = setInterval(() => {
    try {
      writeTimeConfig(map, t);
    } catch (err) {
      onError(err);
    }
  }, CLOCK_REFRESH_MS);
  timer.unref();
  return timer;
}
