// Shared by the daemon e2e tests (reload, interfaces, privdrop): a `spak server --config FILE`
// whose file the test rewrites, and SIGHUP with the one line the daemon answers.
import assert from 'node:assert/strict';
import { labEnforcement, run, serverHookPattern, SPAK_BIN, SpakProcess, tcxIngress, type Lab } from '../../src/lab/lab.js';

/** Starts `spak server --config file` in host (nsenter: the pins outlive it); resolves on the first banner line. */
export async function startDaemon(lab: Lab, host: string, file: string, extra: string[] = []): Promise<SpakProcess> {
  // In the suite's tc run (SPAK_ENFORCEMENT=tc) the daemon enforces at TC ingress, as startSpak does.
  const mode = labEnforcement() === 'tc' && !extra.includes('--enforcement') ? ['--enforcement', 'tc'] : [];
  const proc = lab.spawn(host, [process.execPath, SPAK_BIN, 'server', '--config', file, ...extra, ...mode], {}, `spak server on ${host}`, 'nsenter');
  try {
    const line = await proc.waitForLine(new RegExp(`spak server: ${mode.length > 0 ? serverHookPattern() : '(?:XDP|TC ingress)'}`), 20_000);
    return new SpakProcess('server', proc, line);
  } catch (err) {
    await proc.stop(2_000);
    throw err;
  }
}

/** SIGHUP; returns the daemon's answer: "spak server: reloaded ..." or "spak server: reload rejected ...". */
export async function sighup(server: SpakProcess): Promise<string> {
  const from = server.proc.output.length;
  server.proc.signal('SIGHUP');
  return server.proc.waitForLine(/^spak server: (reloaded|reload rejected)/, 20_000, from);
}

/** SIGHUP that must succeed; returns the program ids swapped per interface. */
export async function reloadOk(server: SpakProcess, what: string): Promise<Record<string, { from: number; to: number }>> {
  const line = await sighup(server);
  assert.match(line, /^spak server: reloaded /, `${what}: ${server.proc.output}`);
  const swaps: Record<string, { from: number; to: number }> = {};
  for (const m of line.matchAll(/(\S+) program (\d+) -> (\d+)/g)) swaps[m[1]!] = { from: Number(m[2]), to: Number(m[3]) };
  return swaps;
}

/** The id of the XDP program attached to ifname in host, from the kernel (ip link), or null. */
export async function xdpProgId(lab: Lab, host: string, ifname = 'eth0'): Promise<number | null> {
  const r = await run(['ip', '-n', lab.host(host).ns, '-j', '-d', 'link', 'show', ifname], { check: true });
  const info = JSON.parse(r.stdout) as { xdp?: { prog?: { id?: number }; attached?: { prog?: { id?: number } }[] } }[];
  const xdp = info[0]?.xdp;
  return xdp?.prog?.id ?? xdp?.attached?.[0]?.prog?.id ?? null;
}

/** The id of the server program the kernel runs on the host's eth0 in the suite's mode (XDP, or the tcx program at TC ingress). */
export async function serverProgId(lab: Lab, host: string): Promise<number | null> {
  if (labEnforcement() === 'tc') return (await tcxIngress(lab, host))[0] ?? null;
  return xdpProgId(lab, host);
}
