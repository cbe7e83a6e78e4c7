// `spak doctor`: gathering what the checks in doctor.ts decide on. Probing the interface
// attaches a pass-through XDP program and a pass-through TCX program for a moment through
// bpf_links that are closed at once, and creates the clsact qdisc only when there was none
// (removing it again): nothing stays attached.
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { BpfLink, BpfObject, readLockHolder } from '../bpf/libbpf.js';
import { inInitialMountNamespace, isBpffs } from '../bpf/bpffs.js';
import { queryXdp, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE } from '../bpf/attach.js';
import { E, libbpf, libc, sizes } from '../bpf/native.js';
import { objectPath } from '../bpf/object-files.js';
import { resolveSecret, type ServerConfig } from '../config/schema.js';
import { configPath, loadConfig as loadSpakConfig, type ConfigPath } from '../config/load.js';
import { loadPrivateKey } from '../knock/keys.js';
import { currentPinPaths, DEFAULT_BPFFS } from '../bpf/pins.js';
import { allTcpSockets, parseProcNetTcp, type KernelSocket } from '../server/seed.js';
import {
  checkBpffs, checkBtf, checkClock, checkConfig, checkInterface, checkKernel, checkLibbpf, checkListeners, checkObjects,
  checkPrivileges, checkTc, checkXdp, type CheckResult, type ClockState, type TcProbe, type XdpProbe,
} from './doctor.js';
import {
  BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, BPF_TCX_INGRESS, BPF_XDP, closeFd, errnoName, libbpfVersion, loadReturnProgram,
  readAdjtimex, TCX_NEXT, tryLink, XDP_PASS,
} from './probe-native.js';

/** Where the configuration is looked for when --config is not given. */
export { DEFAULT_CONFIG_PATH } from '../config/load.js';

export interface DoctorOptions {
  config?: string | undefined;
  /** The interface to probe when the configuration names none. */
  iface?: string | undefined;
  bpffs?: string | undefined;
  /** false: do not attach the probe programs (some NIC drivers reset the link when XDP is attached). */
  probe?: boolean;
}

function capEff(): bigint {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? BigInt(`0x${m[1]}`) : 0n;
  } catch {
    return 0n;
  }
}

function udpSockets(): KernelSocket[] {
  const out: KernelSocket[] = [];
  for (const f of ['/proc/net/udp', '/proc/net/udp6']) {
    try {
      out.push(...parseProcNetTcp(readFileSync(f, 'utf8')));
    } catch {
      // no IPv6
    }
  }
  return out;
}

function clockState(): ClockState {
  try {
    return readAdjtimex();
  } catch (err) {
    return { state: 0, status: 0, maxErrorUs: 0, error: (err as Error).message };
  }
}

/** kernel.unprivileged_bpf_disabled, or null when it cannot be read. */
function unprivBpfDisabled(): number | null {
  try {
    const n = Number(readFileSync('/proc/sys/kernel/unprivileged_bpf_disabled', 'utf8').trim());
    return Number.isInteger(n) ? n : null;
  } catch {
    return null;
  }
}

function objectLoads(): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const name of ['server', 'client']) {
    let obj: BpfObject | null = null;
    try {
      obj = BpfObject.open(objectPath(name));
      if (name === 'server') for (const m of ['spak_replay', 'spak_flows', 'spak_allow']) obj.setMaxEntries(m, 1024); // the verifier's verdict, not 22 MB
      obj.load();
      out[name] = null;
    } catch (err) {
      out[name] = (err as Error).message;
    } finally {
      obj?.close();
    }
  }
  return out;
}

/** Validates with the real schema, then reads every secret and key file it names. */
/** The configuration as the daemon would see it: the file with the SPAK_* overrides applied. */
function loadConfig(where: ConfigPath): { cfg: ServerConfig | undefined; error: string | null } {
  const file = where.file;
  try {
    const all = loadSpakConfig(where);
    const s = all.server;
    if (s) {
      s.keys.forEach((k, i) => resolveSecret(k, `${file}: server.keys[${i}]`));
      if (s.knock) {
        try {
          loadPrivateKey(s.knock.serverKeyFile);
        } catch (err) {
          throw new Error(`${file}: server.knock.serverKeyFile: ${(err as Error).message}`);
        }
      }
    }
    all.client?.destinations.forEach((d, i) => resolveSecret(d, `${file}: client.destinations[${i}]`));
    return { cfg: s, error: null };
  } catch (err) {
    return { cfg: undefined, error: (err as Error).message };
  }
}

function probeXdp(iface: string, ifindex: number, bpffs: string): XdpProbe {
  const attached = queryXdp(ifindex);
  if (attached !== null) {
    try {
      const link = BpfLink.openPinned(currentPinPaths(iface, 'server', bpffs).link);
      try {
        if (link.info().progId === attached) return { kind: 'spak', mode: link.xdpMode() ?? 'native' };
      } finally {
        link.close();
      }
    } catch {
      // not spak's
    }
    return { kind: 'other', progId: attached };
  }
  const fd = loadReturnProgram(BPF_PROG_TYPE_XDP, XDP_PASS);
  try {
    const native = tryLink(fd, ifindex, BPF_XDP, XDP_FLAGS_DRV_MODE);
    const generic = native === null ? null : tryLink(fd, ifindex, BPF_XDP, XDP_FLAGS_SKB_MODE);
    return { kind: 'tried', native, generic };
  } finally {
    closeFd(fd);
  }
}

const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;

function probeTc(ifindex: number): TcProbe {
  let tcx: string | null;
  try {
    const fd = loadReturnProgram(BPF_PROG_TYPE_SCHED_CLS, TCX_NEXT);
    try {
      tcx = tryLink(fd, ifindex, BPF_TCX_INGRESS, 0);
    } finally {
      closeFd(fd);
    }
  } catch (err) {
    tcx = (err as Error).message;
  }
  const hook = { sz: sizes().tcHook, ifindex, attach_point: BPF_TC_INGRESS, parent: 0 };
  const ret = libbpf().bpf_tc_hook_create(hook);
  let clsact: string | null = null;
  if (ret === 0) {
    // We made it: take it away again (both attach points together remove the qdisc).
    libbpf().bpf_tc_hook_destroy({ ...hook, attach_point: BPF_TC_INGRESS | BPF_TC_EGRESS });
  } else if (ret !== -E.EEXIST) {
    clsact = errnoName(-ret);
  }
  return { tcx, clsact };
}

/** Every check, in order. */
export function runDoctor(o: DoctorOptions): CheckResult[] {
  const bpffs = o.bpffs ?? DEFAULT_BPFFS;
  const results: CheckResult[] = [];
  const euid = typeof process.geteuid === 'function' ? process.geteuid() : -1;
  const root = euid === 0;
  results.push(checkKernel(os.release()));
  results.push(checkBtf(existsSync('/sys/kernel/btf/vmlinux')));
  results.push(checkBpffs(bpffs, isBpffs(bpffs), !inInitialMountNamespace()));
  results.push(checkPrivileges(euid, capEff()));
  let libbpfOk = true;
  try {
    results.push(checkLibbpf(libbpfVersion()));
  } catch (err) {
    libbpfOk = false;
    results.push(checkLibbpf(null, (err as Error).message));
  }
  if (libbpfOk) results.push(...checkObjects(objectLoads(), unprivBpfDisabled()));
  results.push(checkClock(clockState()));

  const where = configPath(o.config);
  const file = where.from === 'default' && !existsSync(where.file) ? null : where.file;
  const { cfg, error } = file === null ? { cfg: undefined, error: null } : loadConfig(where);
  results.push(checkConfig(file, error));

  const iface = cfg?.interface ?? o.iface;
  if (iface !== undefined) {
    const index = libc().if_nametoindex(iface);
    results.push(checkInterface(iface, index === 0 ? null : index));
    if (index !== 0) {
      const skipped = o.probe === false ? '--no-probe' : !root ? 'needs root' : !libbpfOk ? 'libbpf is missing' : null;
      let xdp: XdpProbe;
      try {
        xdp = skipped ? { kind: 'skipped', why: skipped } : probeXdp(iface, index, bpffs);
      } catch (err) {
        xdp = { kind: 'tried', native: (err as Error).message, generic: (err as Error).message };
      }
      results.push(checkXdp(iface, xdp, cfg?.xdpMode ?? 'native'));
      results.push(checkTc(iface, skipped ? { skipped } : probeTc(index)));
    }
  }
  if (cfg) {
    const daemon = iface !== undefined && readLockHolder(currentPinPaths(iface, 'server', bpffs).lock) !== null;
    results.push(...checkListeners(cfg.protect, allTcpSockets(), udpSockets(), cfg.knock?.port ?? null, daemon));
  }
  return results;
}
