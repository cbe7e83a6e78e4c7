// The configuration of a server program the tests and the benchmarks load without an interface
// (no attach: driven through BPF_PROG_TEST_RUN): one place for what such a server is, each
// caller overriding what it is about (keys, destinations, knock, stealth).
import { DestCounterIndex } from '../../src/server/destcounters.js';
import { checkConfig, type Enforcement, type ProgramCapacities, type ProgramConfig } from '../../src/server/options.js';
import { ServerProgram } from '../../src/server/program.js';

/** A test key; callers that check tags pass their own in `keys`. */
export const TEST_SERVER_KEY = Buffer.alloc(16, 7);

/** The benchmarks' grace periods: long enough that no flow expires while one is measured. */
export const BENCH_FLOW_TIMES = { flowIdleSeconds: 3600, flowFinSeconds: 30 } as const;

export function serverTestConfig(overrides: Partial<ProgramConfig> = {}): ProgramConfig {
  return {
    keys: [{ id: 1, key: TEST_SERVER_KEY }],
    protect: [{ address: '198.51.100.1', port: 22 }],
    stepSeconds: 30,
    stepWindow: 1,
    flowIdleSeconds: 300,
    flowFinSeconds: 10,
    ...overrides,
  };
}

/** server.bpf.o loaded by the daemon's own code and configured with `config` (checked as the daemon checks it). */
export function loadTestProgram(
  config: ProgramConfig, o: ProgramCapacities & { enforcement?: Enforcement | undefined } = {},
): ServerProgram {
  const program = ServerProgram.load(o);
  try {
    program.configure(checkConfig(config), new DestCounterIndex());
  } catch (err) {
    program.close();
    throw err;
  }
  return program;
}
