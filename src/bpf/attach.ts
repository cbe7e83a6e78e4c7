// Netlink attachments: XDP through bpf_xdp_attach (the pre-bpf_link way, kept for the tests and
// tools that want it) and tc clsact direct-action filters through bpf_tc_*.
import type { BpfProgram } from './object.js';
import { check, closeFd, describeErrno, dupFd, E, ifIndex, libbpf, sizes, type Opts } from './native.js';

export const XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0;
export const XDP_FLAGS_SKB_MODE = 1 << 1;
export const XDP_FLAGS_DRV_MODE = 1 << 2;
const XDP_FLAGS_REPLACE = 1 << 4;
const BPF_TC_INGRESS = 1 << 0;
const BPF_TC_EGRESS = 1 << 1;
const BPF_TC_F_REPLACE = 1 << 0;

/** 'native' = driver mode, 'generic' = skb mode, 'auto' = native, falling back to generic if unsupported. */
export type XdpMode = 'native' | 'generic' | 'auto';

/** An XDP program attached to an interface; detach() removes it only if it is still ours. */
export interface XdpAttachment {
  readonly ifindex: number;
  readonly ifname: string;
  readonly mode: 'native' | 'generic';
  detach(): void;
}

/** Options for attachXdp: replace=true clobbers an existing program; onWarning hears about the generic fallback. */
export interface XdpAttachOptions {
  mode?: XdpMode;
  replace?: boolean;
  onWarning?: (message: string) => void;
}

export const xdpModeFlag = (mode: 'native' | 'generic') => (mode === 'native' ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);

/** The generic-fallback warning, shared with BpfLink.createXdp. */
export function warnGenericFallback(ifname: string, errno: number, onWarning?: (message: string) => void): void {
  const warn = onWarning ?? ((msg: string) => process.emitWarning(msg, { code: 'SPAK_XDP_GENERIC' }));
  warn(`native XDP on ${ifname} failed (${describeErrno(errno)}); falling back to generic XDP, which is slower`);
}

/** Attach prog at XDP on ifname; refuses to replace another program unless opts.replace. */
export function attachXdp(prog: BpfProgram, ifname: string, opts: XdpAttachOptions = {}): XdpAttachment {
  const op = `attaching XDP to ${ifname}`;
  const ifindex = ifIndex(ifname);
  // Our own fd for the program, so detach() can still name it after the BpfObject is closed.
  const ownFd = dupFd(prog.fd, op);
  const requested = opts.mode ?? 'auto';
  const attach = (mode: 'native' | 'generic') =>
    libbpf().bpf_xdp_attach(ifindex, ownFd, xdpModeFlag(mode) | (opts.replace ? 0 : XDP_FLAGS_UPDATE_IF_NOEXIST), null);

  let mode: 'native' | 'generic' = requested === 'generic' ? 'generic' : 'native';
  let ret = attach(mode);
  if (ret < 0 && requested === 'auto' && (ret === -E.EOPNOTSUPP || ret === -E.EINVAL)) {
    warnGenericFallback(ifname, -ret, opts.onWarning);
    mode = 'generic';
    ret = attach(mode);
  }
  if (ret < 0) {
    closeFd(ownFd);
    // EBUSY: this mode already has a program; EEXIST: a program is attached in the other mode.
    check(ret, op, ret === -E.EBUSY || ret === -E.EEXIST ? 'another XDP program is already attached' : undefined);
  }

  let attached = true;
  return {
    ifindex, ifname, mode,
    detach() {
      if (!attached) return;
      const opts = { sz: sizes().xdpAttachOpts, old_prog_fd: ownFd };
      const res = libbpf().bpf_xdp_detach(ifindex, xdpModeFlag(mode) | XDP_FLAGS_REPLACE, opts);
      // With XDP_FLAGS_REPLACE, EEXIST means the attached program (if any) is not ours: nothing of ours to remove.
      if (res < 0 && res !== -E.EEXIST && res !== -E.ENOENT && res !== -E.ENODEV) check(res, `detaching XDP from ${ifname}`);
      attached = false;
      closeFd(ownFd);
    },
  };
}

/** Id of the XDP program attached to ifindex in any mode (netlink or bpf_link), or null if none. */
export function queryXdp(ifindex: number): number | null {
  const id = [0];
  const ret = libbpf().bpf_xdp_query_id(ifindex, 0, id);
  if (ret === -E.ENOENT || ret === -E.ENODEV) return null;
  check(ret, `querying XDP on ifindex ${ifindex}`);
  return id[0] || null;
}

const BPF_TCX_INGRESS = 46; // enum bpf_attach_type (see link.ts)

/** Ids of the programs at TC ingress of ifindex through tcx (links or tcx attachments), in run order. */
export function queryTcxIngress(ifindex: number): number[] {
  const ids = new Uint32Array(64);
  const cnt = [ids.length];
  const ret = libbpf().bpf_prog_query(ifindex, BPF_TCX_INGRESS, 0, [0], ids, cnt);
  if (ret === -E.ENOENT || ret === -E.ENODEV) return [];
  check(ret, `querying tcx ingress on ifindex ${ifindex}`);
  return [...ids.subarray(0, cnt[0])];
}

// tc (clsact + direct-action BPF filter)

/** A tc BPF filter attached by attachTc; detach() removes it if it still runs our program. */
export interface TcAttachment {
  readonly ifindex: number;
  readonly ifname: string;
  readonly direction: 'ingress' | 'egress';
  readonly handle: number;
  readonly priority: number;
  /** Kernel id of the program this filter runs. */
  readonly progId: number;
  detach(): void;
}

/** handle/priority 0 (default) = the kernel picks; replace=true overwrites a filter at the same handle/priority. */
export interface TcAttachOptions { priority?: number; handle?: number; replace?: boolean }

// The clsact qdisc is shared by every filter on an interface, so we remove it only when we created it
// and the last of *our* filters on that interface is gone. Filters added by others after us are not
// visible through libbpf and would go with it; we accept that for a qdisc we introduced.
const clsactCreatedByUs = new Set<number>();
const ourTcFilters = new Map<number, number>();

function releaseClsact(ifindex: number): void {
  const left = (ourTcFilters.get(ifindex) ?? 1) - 1;
  if (left > 0) return void ourTcFilters.set(ifindex, left);
  ourTcFilters.delete(ifindex);
  if (!clsactCreatedByUs.delete(ifindex)) return;
  // Both attach points together destroy the qdisc itself (one alone would just flush its filters).
  libbpf().bpf_tc_hook_destroy({ sz: sizes().tcHook, ifindex, attach_point: BPF_TC_INGRESS | BPF_TC_EGRESS, parent: 0 });
}

const tcHook = (ifindex: number, direction: 'ingress' | 'egress'): Opts =>
  ({ sz: sizes().tcHook, ifindex, attach_point: direction === 'ingress' ? BPF_TC_INGRESS : BPF_TC_EGRESS, parent: 0 });

/** Attach prog as a direct-action tc filter (creating the clsact qdisc if needed). */
export function attachTc(prog: BpfProgram, ifname: string, direction: 'ingress' | 'egress', opts: TcAttachOptions = {}): TcAttachment {
  const op = `attaching tc ${direction} program to ${ifname}`;
  const lib = libbpf();
  const ifindex = ifIndex(ifname);
  const progFd = prog.fd;
  const hook = tcHook(ifindex, direction);

  const created = lib.bpf_tc_hook_create(hook);
  if (created < 0 && created !== -E.EEXIST) check(created, op);
  if (created === 0) clsactCreatedByUs.add(ifindex);
  ourTcFilters.set(ifindex, (ourTcFilters.get(ifindex) ?? 0) + 1);

  const tcOpts = {
    sz: sizes().tcOpts, prog_fd: progFd, flags: opts.replace ? BPF_TC_F_REPLACE : 0, prog_id: 0,
    handle: opts.handle ?? 0, priority: opts.priority ?? 0,
  };
  const ret = lib.bpf_tc_attach(hook, tcOpts);
  if (ret < 0) {
    releaseClsact(ifindex);
    const taken = ret === -E.EEXIST ? `a filter with handle ${tcOpts.handle} and priority ${tcOpts.priority} already exists` : undefined;
    check(ret, op, taken);
  }
  const { handle, priority, prog_id: progId } = tcOpts; // filled in by the kernel's echo

  let attached = true;
  return {
    ifindex, ifname, direction, handle, priority, progId,
    detach() {
      if (!attached) return;
      const query: Opts = { sz: sizes().tcOpts, prog_fd: 0, flags: 0, prog_id: 0, handle, priority };
      const found = lib.bpf_tc_query(hook, query);
      if (found === 0 && query.prog_id === progId) {
        const res = lib.bpf_tc_detach(hook, { sz: sizes().tcOpts, prog_fd: 0, flags: 0, prog_id: 0, handle, priority });
        if (res < 0 && res !== -E.ENOENT) check(res, `detaching tc ${direction} program from ${ifname}`);
      } else if (found < 0 && found !== -E.ENOENT && found !== -E.ENODEV && found !== -E.EINVAL) {
        check(found, `detaching tc ${direction} program from ${ifname}`);
      } // else: already gone, or someone replaced it with their own program: leave theirs alone
      attached = false;
      releaseClsact(ifindex);
    },
  };
}

/** Id of the program in the tc filter at handle/priority on ifname's clsact hook, or null if there is none. */
export function queryTc(ifname: string, direction: 'ingress' | 'egress', handle: number, priority: number): number | null {
  const query: Opts = { sz: sizes().tcOpts, prog_fd: 0, flags: 0, prog_id: 0, handle, priority };
  const ret = libbpf().bpf_tc_query(tcHook(ifIndex(ifname), direction), query);
  // ENOENT: no such filter; EINVAL: no clsact qdisc at all.
  if (ret === -E.ENOENT || ret === -E.EINVAL) return null;
  check(ret, `querying tc ${direction} filter ${handle}/${priority} on ${ifname}`);
  return (query.prog_id as number) || null;
}
