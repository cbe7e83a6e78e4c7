// `spak server reload [IFACE]`: asks the running server daemon (by its control socket, see
// src/daemon/control.ts) to reload its configuration and waits for the outcome: exit 0 with the
// daemon's summary, or 1 with its reason (a rejected configuration leaves the old one in force).
// Without IFACE, every server daemon of this network namespace is asked, each once.
import { controlPath, controlSockets, requestReload } from '../daemon/control.js';
import { UsageError } from './usage.js';

export async function serverReload(rest: (string | undefined)[]): Promise<void> {
  const given = rest.filter((a) => a !== undefined);
  if (given.length > 1) throw new UsageError('spak server reload takes at most one <iface>');
  const named = given[0];
  const sockets = named !== undefined ? new Map([[named, controlPath(named)]]) : controlSockets();
  if (sockets.size === 0) throw new Error('spak server reload: no spak server daemon runs here (no control socket in /run/spak)');
  const done = new Set<string>();
  let answered = 0;
  let failed = 0;
  for (const [iface, file] of sockets) {
    if (done.has(iface)) continue; // a daemon serving several interfaces answers once
    let a;
    try {
      a = await requestReload(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const gone = code === 'ENOENT' || code === 'ECONNREFUSED';
      if (named === undefined && gone) continue; // a dead daemon's socket
      throw new Error(gone ? `no spak server daemon serves ${iface} (${file}: ${code})` : `${file}: ${(err as Error).message}`);
    }
    answered++;
    for (const i of a.served.length > 0 ? a.served : [iface]) done.add(i);
    if (a.ok) process.stdout.write(`spak server reload: ${a.message}\n`);
    else {
      failed++;
      process.stderr.write(`spak server reload: ${a.message}\n`);
    }
  }
  if (answered === 0) throw new Error('spak server reload: no spak server daemon runs here (only stale control sockets in /run/spak)');
  if (failed > 0) process.exitCode = 1;
}
