// The network-namespace lab of the e2e tests, `make demo` and the benchmarks (not in the npm package),
// by concern:
//   process.ts  commands and processes (bounded runs, LabProcess)
//   hosts.ts    the Lab: namespaces, hosts, commands in a host, spak commands
//   traffic.ts  services in a host and probes from a host (the Lab's startService, httpGet, ...)
//   spak.ts     spak daemons in a host (startSpak, SpakProcess) and their hooks
//   counters.ts spak's printed counters
//   cleanup.ts  the registry of labs, exit and signal cleanup, pins, stale labs
export {
  describeArgv, LabProcess, REPO_ROOT, run, sleep, SPAK_BIN, SYSTEM_PYTHON, V4_PREFIX, V6_PREFIX, type ExecOptions, type ExecResult,
} from './process.js';
export { destroyAllLabsSync, netnsInode, removeSpakPins, removeStaleLabs, SPAK_BPFFS_DIR, SPAK_LOCK_DIR } from './cleanup.js';
export { Lab, type LabHost, type LabOptions } from './hosts.js';
export { counter, parseCounters, type Counters } from './counters.js';
export {
  hasServerHook, hasXdp, labEnforcement, serverHookPattern, SpakProcess, startSpak, tcxIngress, type SpakClientConfig, type SpakServerConfig,
} from './spak.js';
