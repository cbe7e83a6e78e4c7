// BPF_PROG_TEST_RUN: run a loaded program on a frame in the kernel without attaching it.
import type { BpfProgram } from './object.js';
import { check, E, libbpf, sizes, type Opts } from './native.js';

/** Result of testRun: retval is signed (tc's TC_ACT_UNSPEC reads -1), durationNs is the kernel's per-run average. */
export interface TestRunResult {
  retval: number;
  dataOut: Buffer;
  durationNs: number;
}

/** Run prog once (or opts.repeat times) on data in the kernel without attaching it (bpf_prog_test_run_opts). */
export function testRun(prog: BpfProgram, data: Buffer, opts: { repeat?: number; dataOutSize?: number; ctxIn?: Buffer } = {}): TestRunResult {
  const dataOut = Buffer.alloc(opts.dataOutSize ?? data.length + 256);
  const run: Opts = {
    sz: sizes().testRunOpts,
    data_in: data, data_out: dataOut, data_size_in: data.length, data_size_out: dataOut.length,
    ctx_in: opts.ctxIn ?? null, ctx_out: null, ctx_size_in: opts.ctxIn?.length ?? 0, ctx_size_out: 0,
    retval: 0, repeat: opts.repeat ?? 1, duration: 0, flags: 0, cpu: 0, batch_size: 0,
  };
  const ret = libbpf().bpf_prog_test_run_opts(prog.fd, run);
  const tooSmall = ret === -E.ENOSPC ? `output (${String(run.data_size_out)} bytes) exceeds dataOutSize ${dataOut.length}` : undefined;
  check(ret, `test-running program ${prog.name}`, tooSmall);
  return {
    retval: (run.retval as number) | 0,
    dataOut: dataOut.subarray(0, run.data_size_out as number),
    durationNs: run.duration as number,
  };
}
