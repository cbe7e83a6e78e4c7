// bpf_link attachments: XDP links, and tcx links at TC ingress. Words: "TC ingress" is the hook, "tcx"
// the kernel's link type for it, 'tc' the server's enforcement mode that runs there.
// Unlike a netlink XDP attachment, a link is owned by its fds and pins: it
// survives our process when pinned, its program can be swapped atomically (bpf_link_update with the
// expected old program), and bpf_link_detach removes exactly it, whoever else holds it.
import fs from 'node:fs';
import { queryXdp, warnGenericFallback, XDP_FLAGS_DRV_MODE, xdpModeFlag } from './attach.js';
import { progInfo, type BpfProgram } from './object.js';
import {
  BpfError, bpfFdKind, check, closeFd, E, fsError, ifIndex, libbpf, objInfo, sizes,
} from './native.js';

const BPF_XDP = 37; // enum bpf_attach_type
/** enum bpf_attach_type: TC ingress through tcx (kernel 6.6+). libbpf 1.1 does not name it and passes it through. */
export const BPF_TCX_INGRESS = 46;
const BPF_F_REPLACE = 1 << 2;
// struct bpf_link_info: type, id, prog_id, then the union (xdp.ifindex at 16; tcx.ifindex at 16, tcx.attach_type at 20)
const LINK_INFO_SIZE = 24;

/** enum bpf_link_type values we name. */
export const LINK_TYPE_XDP = 6;
export const LINK_TYPE_TCX = 11;

/**
 * What the kernel says about a link; ifindex 0 for an XDP or tcx link means defunct (interface gone, or
 * detached). attachType: the tcx link's (BPF_TCX_INGRESS), 0 for other kinds.
 */
export interface LinkInfo { id: number; progId: number; type: number; ifindex: number; attachType: number }

/** The enforcement mode a server link of this type serves ('xdp', or 'tc' for a tcx link), null for any other type. */
export function linkKind(info: Pick<LinkInfo, 'type'>): 'xdp' | 'tc' | null {
  return info.type === LINK_TYPE_XDP ? 'xdp' : info.type === LINK_TYPE_TCX ? 'tc' : null;
}

/** A program's id and name from its id, or null if it no longer exists (for messages only). */
function describeProg(id: number): string {
  const fd = libbpf().bpf_prog_get_fd_by_id(id);
  if (fd < 0) return `id ${id}`;
  try {
    return `id ${id}, name ${progInfo(fd, `program id ${id}`).name}`;
  } catch {
    return `id ${id}`;
  } finally {
    closeFd(fd);
  }
}

/** A bpf_link fd. close() drops only our reference: a pinned (or otherwise held) link stays attached. */
export class BpfLink {
  #fd: number;
  #closed = false;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Attach prog at XDP on ifname as a link. 'auto' tries native (driver) mode and falls back to generic with a
   * warning. Refuses (BpfError EBUSY/EEXIST) when any other XDP program, netlink-attached or a link, is there.
   */
  static createXdp(prog: BpfProgram, ifname: string, mode: 'native' | 'generic' | 'auto' = 'auto',
    onWarning?: (message: string) => void): { link: BpfLink; mode: 'native' | 'generic' } {
    const op = `attaching XDP link to ${ifname}`;
    const ifindex = ifIndex(ifname);
    const progFd = prog.fd;
    const create = (m: 'native' | 'generic') =>
      libbpf().bpf_link_create(progFd, ifindex, BPF_XDP, { sz: sizes().linkCreateOpts, flags: xdpModeFlag(m) });
    let used: 'native' | 'generic' = mode === 'generic' ? 'generic' : 'native';
    let ret = create(used);
    if (ret < 0 && mode === 'auto' && (ret === -E.EOPNOTSUPP || ret === -E.EINVAL)) {
      warnGenericFallback(ifname, -ret, onWarning);
      used = 'generic';
      ret = create(used);
    }
    if (ret === -E.EBUSY || ret === -E.EEXIST) {
      // EBUSY: a program in this mode; EEXIST: one in the other mode. Name it if it is cheap to learn.
      let holder = '';
      try {
        const id = queryXdp(ifindex);
        if (id !== null) holder = ` (program ${describeProg(id)})`;
      } catch { /* the message is enough without it */ }
      throw new BpfError(op, -ret, `another XDP program is already attached to ${ifname}${holder}`);
    }
    check(ret, op);
    return { link: new BpfLink(ret), mode: used };
  }

  /**
   * Attach a sched_cls program at TC ingress of ifname as a tcx link (kernel 6.6+), appended after any
   * program already there. Unlike a cls_bpf filter it can be pinned and its program swapped like an XDP link.
   */
  static createTcx(prog: BpfProgram, ifname: string): BpfLink {
    const op = `attaching TC ingress (tcx) link to ${ifname}`;
    const ifindex = ifIndex(ifname);
    const ret = libbpf().bpf_link_create(prog.fd, ifindex, BPF_TCX_INGRESS, { sz: sizes().linkCreateOpts, flags: 0 });
    const old = ret === -E.EINVAL ? 'the kernel has no tcx links (Linux 6.6 or later is needed for enforcement at TC ingress)' : undefined;
    check(ret, op, old);
    return new BpfLink(ret);
  }

  /** Open a link pinned in bpffs. */
  static openPinned(path: string): BpfLink {
    const op = `opening pinned link ${path}`;
    const fd = check(libbpf().bpf_obj_get(path), op);
    try {
      if (bpfFdKind(fd) !== 'link') throw new BpfError(op, E.EINVAL, 'not a BPF link');
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    return new BpfLink(fd);
  }

  /** The link fd (throws once closed). */
  get fd(): number {
    if (this.#closed) throw new BpfError('bpf link', E.EBADF, 'link is closed');
    return this.#fd;
  }

  /** Kernel link id. */
  get id(): number { return this.info().id; }

  /** id, current program id, link type and (XDP, tcx) ifindex and (tcx) attach type from bpf_obj_get_info_by_fd. */
  info(): LinkInfo {
    const info = objInfo(this.fd, LINK_INFO_SIZE, 'reading link info');
    const type = info.readUInt32LE(0);
    const netdev = type === LINK_TYPE_XDP || type === LINK_TYPE_TCX;
    return {
      type, id: info.readUInt32LE(4), progId: info.readUInt32LE(8),
      ifindex: netdev ? info.readUInt32LE(16) : 0,
      attachType: type === LINK_TYPE_TCX ? info.readUInt32LE(20) : 0,
    };
  }

  /** For an XDP link: the mode it runs in ('native' or 'generic'), or null when defunct (or not an XDP link). */
  xdpMode(): 'native' | 'generic' | null {
    const { ifindex, progId, type } = this.info();
    if (ifindex === 0 || type !== LINK_TYPE_XDP) return null;
    const drv = [0];
    check(libbpf().bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, drv), `querying XDP on ifindex ${ifindex}`);
    return drv[0] === progId ? 'native' : 'generic';
  }

  /** Pin at a bpffs path (the directory must exist on bpffs: see mkdirPins). */
  pin(path: string): void {
    check(libbpf().bpf_obj_pin(this.fd, path), `pinning link at ${path}`);
  }

  /** Remove a pin (unlink); the link lives on while any fd or other pin holds it. */
  unpin(path: string): void {
    try {
      fs.unlinkSync(path);
    } catch (err) {
      throw fsError(`unpinning link from ${path}`, err);
    }
  }

  /**
   * Swap the link's program for newProg atomically. With expectedOldProgId the kernel refuses (EPERM) unless the
   * link still runs exactly that program, so a concurrent swap by someone else is never overwritten.
   * Given the old program itself (an fd this process holds), no id lookup is needed: that lookup
   * (BPF_PROG_GET_FD_BY_ID) takes CAP_SYS_ADMIN, which a daemon that dropped privileges lacks.
   */
  update(newProg: BpfProgram, expectedOld?: number | BpfProgram): void {
    const op = `replacing the program of link ${this.id}`;
    const newFd = newProg.fd;
    if (expectedOld === undefined) {
      check(libbpf().bpf_link_update(this.fd, newFd, { sz: sizes().linkUpdateOpts, flags: 0, old_prog_fd: 0 }), op);
      return;
    }
    if (typeof expectedOld !== 'number') {
      const ret = libbpf().bpf_link_update(this.fd, newFd, { sz: sizes().linkUpdateOpts, flags: BPF_F_REPLACE, old_prog_fd: expectedOld.fd });
      check(ret, op, ret === -E.EPERM ? `the link no longer runs program id ${expectedOld.id} (someone else replaced it)` : undefined);
      return;
    }
    const expectedOldProgId = expectedOld;
    const oldFd = libbpf().bpf_prog_get_fd_by_id(expectedOldProgId);
    if (oldFd < 0) {
      const gone = oldFd === -E.ENOENT ? `program id ${expectedOldProgId} no longer exists (someone else replaced it)` : undefined;
      check(oldFd, op, gone);
    }
    try {
      const ret = libbpf().bpf_link_update(this.fd, newFd, { sz: sizes().linkUpdateOpts, flags: BPF_F_REPLACE, old_prog_fd: oldFd });
      const raced = ret === -E.EPERM ? `the link no longer runs program id ${expectedOldProgId} (someone else replaced it)` : undefined;
      check(ret, op, raced);
    } finally {
      closeFd(oldFd);
    }
  }

  /** Detach from the hook now (bpf_link_detach), even though other fds or pins still hold the link; pins stay until unpinned. */
  detach(): void {
    check(libbpf().bpf_link_detach(this.fd), 'detaching link');
  }

  /** Close our fd only; idempotent. A link with no pin and no other fd is detached by the kernel. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeFd(this.#fd);
  }
}
