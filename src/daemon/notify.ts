// sd_notify(3) for a Type=notify unit: one datagram to the unix socket systemd names in
// $NOTIFY_SOCKET ("@..." is the abstract namespace). `systemctl start` returns only once the
// daemon says READY=1, and fails when it exits before: a start that cannot protect is reported.
// Node has no unix datagram sockets, so this goes through libc (bpf/native.ts's binding). Without $NOTIFY_SOCKET: nothing.
import koffi from 'koffi';
import { describeErrno, libc } from '../bpf/native.js';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const SUN_PATH_MAX = 108;

/**
 * Sends `state` (e.g. "READY=1\nSTATUS=...") to systemd; returns false when not under a notify
 * socket. Throws one line when the socket is named but cannot be reached.
 */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const where = env.NOTIFY_SOCKET;
  if (!where) return false;
  if (!where.startsWith('/') && !where.startsWith('@')) throw new Error(`NOTIFY_SOCKET=${where}: not a unix socket path`);
  const name = Buffer.from(where.startsWith('@') ? `\0${where.slice(1)}` : where);
  if (name.length >= SUN_PATH_MAX) throw new Error(`NOTIFY_SOCKET=${where}: too long`);
  const addr = Buffer.alloc(2 + SUN_PATH_MAX); // struct sockaddr_un
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  const addrlen = 2 + name.length + (where.startsWith('@') ? 0 : 1);
  const L = libc();
  const fd = L.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`sd_notify: socket: ${describeErrno(koffi.errno())}`);
  try {
    const msg = Buffer.from(state);
    if (L.sendto(fd, msg, msg.length, MSG_NOSIGNAL, addr, addrlen) < 0) throw new Error(`sd_notify to ${where}: ${describeErrno(koffi.errno())}`);
  } finally {
    L.close(fd);
  }
  return true;
}

/** sdNotify where systemd listens; a failure is a warning (the daemon runs and protects either way). */
export function notify(state: string): void {
  try {
    sdNotify(state);
  } catch (err) {
    process.stderr.write(`spak: warning: ${(err as Error).message}\n`);
  }
}
