// The options of a server the tests and the benchmarks load without an interface ('none': no
// attach, driven through BPF_PROG_TEST_RUN): one place for what such a server is, each caller
// overriding what it is about (keys, destinations, capacities, knock, stealth).
import type { ServerOptions } from '../../src/server/server.js';

/** A test key; callers that check tags pass their own in `keys`. */
export const TEST_SERVER_KEY = Buffer.alloc(16, 7);

/** The benchmarks' grace periods: long enough that no flow expires while one is measured. */
export const BENCH_FLOW_TIMES = { flowIdleSeconds: 3600, flowFinSeconds: 30 } as const;

export function serverTestOptions(overrides: Partial<ServerOptions> = {}): ServerOptions {
  return {
    iface: 'none',
    xdpMode: 'native',
    keys: [{ id: 1, key: TEST_SERVER_KEY }],
    protect: [{ address: '198.51.100.1', port: 22 }],
    stepSeconds: 30,
    stepWindow: 1,
    flowIdleSeconds: 300,
    flowFinSeconds: 10,
    seedExisting: false,
    ...overrides,
  };
}
