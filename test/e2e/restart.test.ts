// spak-test-timeout: 900
// spak-test-modes: xdp tc
// Restarts and crashes never open the door (issue 5, section 2, "restart opens the door"): the
// program and its maps stay pinned and in force while no daemon runs; a new daemon adopts them.
// Hosts: server .1/::1, client .2/::2 (spak client), third host .3/::3 (no key).
// Nothing here asserts a timing: the sleeps only give a prober time to knock.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hasXdp, Lab, labEnforcement, serverHookPattern, sleep, startSpak, tcxIngress, type SpakProcess } from '../../src/lab/lab.js';
import {
  ADDR,
  assertBlocked,
  assertStillEchoes,
  capture,
  CLI,
  clientConfig,
  FAMILIES,
  longLived,
  OTH,
  serverConfig,
  skip,
  SRV,
  startProber,
  threeHosts,
  assertCapturedSynRefused,
  assertProberBlocked,
} from './common.js';

const PORT = 8080;
const ECHO_PORT = 9090;

describe('spak restarts and crashes never open the door', { skip }, () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.create({ tag: 'restart' });
    await threeHosts(lab);
    for (const f of FAMILIES) {
      await lab.startService(SRV, ADDR[f], PORT, 'http');
      await lab.startService(SRV, ADDR[f], ECHO_PORT, 'echo');
    }
  });

  after(async () => {
    await lab?.destroy();
  });

  const startServer = () => startSpak(lab, SRV, 'server', { config: serverConfig([PORT, ECHO_PORT]) });
  const startClient = () => startSpak(lab, CLI, 'client', { config: clientConfig([PORT, ECHO_PORT]) });

  async function cleanup(...procs: (SpakProcess | null | undefined)[]): Promise<void> {
    for (const p of procs) await p?.stop().catch(() => undefined);
    await lab.cleanupSpak(SRV);
    await lab.cleanupSpak(CLI);
  }

  it('2a: SIGTERM and start again, 3 times, while a keyless prober knocks: zero connects, none kept', { timeout: 180_000 }, async () => {
    let server: SpakProcess | null = await startServer();
    let prober: Awaited<ReturnType<typeof startProber>> | null = null;
    const banners: string[] = [];
    try {
      await assertBlocked(lab, OTH, [{ addr: ADDR.v4, port: ECHO_PORT }], 'before the restarts');
      prober = await startProber(lab, OTH, [ADDR.v4, ADDR.v6], ECHO_PORT);
      for (let i = 0; i < 3; i++) {
        const { output } = await server.stop();
        assert.equal(server.proc.exitCode, 0, `SIGTERM exit: ${output}`);
        server = null;
        await sleep(1_000); // a restart's pause: the prober knocks meanwhile
        server = await startServer();
        banners.push(server.banner);
        await sleep(500);
      }
      const probe = await prober.stop();
      prober = null;
      assertProberBlocked(probe, 10, 'during the restarts');
      for (const b of banners) assert.match(b, new RegExp(`^spak server: ${serverHookPattern()} adopted on eth0`), 'a restart adopts');
      // Still protected, and still working for the client.
      await assertBlocked(lab, OTH, FAMILIES.map((f) => ({ addr: ADDR[f], port: ECHO_PORT })), 'after the restarts');
    } finally {
      await prober?.stop().catch(() => undefined);
      await cleanup(server);
    }
  });

  it('2b: a client SYN captured before a restart, replayed after it from a third host: no SYN-ACK, drop_replay', { timeout: 180_000 }, async () => {
    let server: SpakProcess | null = await startServer();
    let client: SpakProcess | null = null;
    try {
      client = await startClient();
      const pcaps: Record<string, string> = {};
      for (const f of FAMILIES)
        pcaps[f] = await capture(lab, SRV, PORT, `pre-restart-${f}`, async () => {
          const r = await lab.httpGet(CLI, ADDR[f], PORT);
          assert.ok(r.ok, `the real client connects (${f}): ${r.error}`);
        });
      await server.stop();
      assert.equal(server.proc.exitCode, 0, server.proc.output);
      server = await startServer();

      const srvMac = await lab.mac(SRV);
      for (const f of FAMILIES) {
        const o = { pcap: pcaps[f]!, src: lab.host(OTH)[f], dst: ADDR[f], dstMac: srvMac, dport: PORT };
        await assertCapturedSynRefused(lab, server, o, 'drop_replay', `replayed after the restart, ${f}`);
      }
    } finally {
      await cleanup(client, server);
    }
  });

  it('2c: after SIGKILL a new server adopts the pinned program: no gap, no manual detach, old connections live on', { timeout: 180_000 }, async () => {
    let server: SpakProcess | null = await startServer();
    let client: SpakProcess | null = null;
    let prober: Awaited<ReturnType<typeof startProber>> | null = null;
    const conns: Awaited<ReturnType<typeof longLived>>[] = [];
    try {
      client = await startClient();
      for (const f of FAMILIES) conns.push(await longLived(lab, CLI, ADDR[f], ECHO_PORT));

      await server.kill('SIGKILL');
      assert.equal(server.proc.exitSignal, 'SIGKILL');
      server = null;
      prober = await startProber(lab, OTH, [ADDR.v4, ADDR.v6], ECHO_PORT);
      await sleep(1_500); // the crashed daemon's absence: the prober knocks meanwhile
      server = await startServer();
      assert.match(server.banner, new RegExp(`^spak server: ${serverHookPattern()} adopted on eth0`), 'the new server adopts');
      await sleep(500);
      const probe = await prober.stop();
      prober = null;
      assertProberBlocked(probe, 5, 'between SIGKILL and restart');

      for (const [i, c] of conns.entries()) await assertStillEchoes(c.proc, 5, `authenticated ${FAMILIES[i]} connection across SIGKILL and restart`);
      for (const f of FAMILIES) {
        const r = await lab.httpGet(CLI, ADDR[f], PORT);
        assert.ok(r.ok, `a new authenticated connection after the restart (${f}): ${r.error}`);
      }
      await assertBlocked(lab, OTH, FAMILIES.map((f) => ({ addr: ADDR[f], port: PORT })), 'keyless after the restart');
    } finally {
      await prober?.stop().catch(() => undefined);
      for (const c of conns) await c.proc.stop(1_000);
      await cleanup(client, server);
    }
  });

  // The configuration changes mode: the new daemon attaches its link before it detaches the old one.
  const mode = labEnforcement();
  const other = mode === 'tc' ? 'xdp' : 'tc';
  it(`2d: restarts that switch ${other} -> ${mode} -> ${other} -> ${mode}, while a keyless prober knocks: zero connects, old connections live on, one hook at a time after each`, { timeout: 180_000 }, async () => {
    const start = (m: string) => startSpak(lab, SRV, 'server', { config: serverConfig([PORT, ECHO_PORT]) }, ['--enforcement', m]);
    const hooks = async () => ({ xdp: await hasXdp(lab, SRV), tcx: (await tcxIngress(lab, SRV)).length });
    let server: SpakProcess | null = await start(other);
    let client: SpakProcess | null = null;
    let prober: Awaited<ReturnType<typeof startProber>> | null = null;
    const conns: Awaited<ReturnType<typeof longLived>>[] = [];
    try {
      client = await startClient();
      for (const f of FAMILIES) conns.push(await longLived(lab, CLI, ADDR[f], ECHO_PORT));
      prober = await startProber(lab, OTH, [ADDR.v4, ADDR.v6], ECHO_PORT);
      for (const m of [mode, other, mode]) {
        await server.stop();
        assert.equal(server.proc.exitCode, 0, server.proc.output);
        server = null;
        await sleep(500);
        server = await start(m);
        const banner = m === 'tc' ? 'TC ingress' : 'XDP \\((?:native|generic)\\)';
        assert.match(server.banner, new RegExp(`^spak server: ${banner} adopted on eth0 .*replaced program id`), `${m}: adopts`);
        assert.deepEqual(await hooks(), m === 'tc' ? { xdp: false, tcx: 1 } : { xdp: true, tcx: 0 }, `${m}: only its own hook is left`);
        await sleep(500);
      }
      const probe = await prober.stop();
      prober = null;
      assertProberBlocked(probe, 5, 'across the switches');
      for (const [i, c] of conns.entries()) await assertStillEchoes(c.proc, 5, `authenticated ${FAMILIES[i]} connection across the switches`);
      await assertBlocked(lab, OTH, FAMILIES.map((f) => ({ addr: ADDR[f], port: PORT })), 'keyless after the switches');
    } finally {
      await prober?.stop().catch(() => undefined);
      for (const c of conns) await c.proc.stop(1_000);
      await cleanup(client, server);
    }
  });
});
