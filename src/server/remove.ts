// `spak server stop IFACE`: the one explicit way to remove protection. Stopping a daemon leaves
// protection in force on purpose (the next one adopts it); this stops the daemon that still serves
// the interface, detaches the link and removes every pin.
import { readdirSync } from 'node:fs';
import { linkKind, readLockHolder, removePins } from '../bpf/libbpf.js';
import { currentPinPaths, DEFAULT_BPFFS, legacyPinPaths, openPinnedLink, pinPaths } from '../bpf/pins.js';

/** Returns what it did, one line per step. */
export function removeServer(iface: string, bpffs = DEFAULT_BPFFS): string[] {
  // Pins where pinPaths() points, or where an earlier version left them; its daemon's lock too.
  const paths = currentPinPaths(iface, 'server', bpffs);
  const done: string[] = [];
  for (const lock of new Set([pinPaths(iface, 'server', bpffs).lock, legacyPinPaths(iface, 'server', bpffs)?.lock ?? paths.lock])) {
    const pid = readLockHolder(lock);
    if (pid === null) continue;
    process.kill(pid, 'SIGTERM');
    done.push(`stopped the spak server daemon (pid ${pid})`);
    waitUntil(() => readLockHolder(lock) === null, 5_000);
  }
  let pins: string[] = [];
  try {
    pins = readdirSync(paths.dir);
  } catch {
    return done; // nothing pinned (or bpffs not mounted: then nothing can be)
  }
  const link = openPinnedLink(paths.link);
  if (link) {
    const info = link.info();
    const kind = linkKind(info) === 'tc' ? 'TC ingress (tcx)' : 'XDP';
    link.detach();
    link.close();
    done.push(info.ifindex ? `detached ${kind} link ${info.id} (program id ${info.progId}) from ${iface}` : `removed ${kind} link ${info.id} (its interface is gone)`);
  }
  removePins(paths.dir, bpffs);
  done.push(`removed ${pins.length} pin(s) and ${paths.dir}`);
  return done;
}

/** Waits (blocking: the command has nothing else to do) until done() or ms have passed. */
function waitUntil(done: () => boolean, ms: number): void {
  const until = Date.now() + ms;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  while (!done() && Date.now() < until) Atomics.wait(cell, 0, 0, 50);
}
