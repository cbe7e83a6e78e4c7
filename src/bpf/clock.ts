// The eBPF programs read CLOCK_MONOTONIC (bpf_ktime_get_coarse_ns) and add an offset
// to get unix time; user space keeps that offset current so NTP steps are followed.
/** CLOCK_REALTIME - CLOCK_MONOTONIC in ns (process.hrtime is CLOCK_MONOTONIC on Linux). */
export function realtimeOffsetNs(): bigint {
  const mono = process.hrtime.bigint();
  const real = BigInt(Date.now()) * 1_000_000n;
  return real - mono;
}

/** CLOCK_MONOTONIC now, in ns: the clock flow timestamps in the maps use. */
export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}
