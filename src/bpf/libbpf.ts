// A small typed binding over the system libbpf (1.1, libbpf.so.1) through koffi, split by concern
// (as cilium/ebpf splits prog/map/link). This barrel re-exports it all so `from './libbpf.js'` keeps
// working; new code may import the concern's module directly.
//   native.ts  the bound functions, struct types, errno names, BpfError, libbpf's log
//   libc.ts    libc and libbpf opened once (koffi), for every module that calls them
//   object.ts  BpfObject, BpfProgram          map.ts   BpfMap (elements, batches, pins)
//   link.ts    BpfLink (XDP, tcx links)       attach.ts netlink XDP, tc clsact
//   testrun.ts BPF_PROG_TEST_RUN             bpffs.ts  mounting bpffs, pin directories
//   lock.ts    flock-based single-daemon lock
export { BpfError, describeErrno, errnoCode, ifIndex, numPossibleCpus, setLibbpfLogger, type LibbpfLogger } from './native.js';
export { BpfObject, BpfProgram, interruptedLoad, LOAD_ATTEMPTS, openAndLoad, openAndLoadSync } from './object.js';
export { BpfMap, mapShapeMismatch, u32, type MapChunk, type MapShape, type UpdateFlag } from './map.js';
export { BPF_TCX_INGRESS, BpfLink, linkKind, LINK_TYPE_TCX, LINK_TYPE_XDP, type LinkInfo } from './link.js';
export {
  attachTc, attachXdp, queryTc, queryTcxIngress, queryXdp,
  type TcAttachment, type TcAttachOptions, type XdpAttachment, type XdpAttachOptions, type XdpMode,
} from './attach.js';
export { testRun, type TestRunResult } from './testrun.js';
export {
  BPF_FS_MAGIC, DEFAULT_BPFFS, ensureBpffs, inInitialMountNamespace, isBpffs, mkdirPins, removePins, type EnsureBpffsOptions,
} from './bpffs.js';
export { readLockHolder, tryLock, type LockResult } from './lock.js';
