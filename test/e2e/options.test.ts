// spak-test-timeout: 900
// spak-test-modes: xdp tc
// Low-severity holes of issue 5, section 2: a second spak client on the same interface, flags
// combined with --config, and a bad option choice. Hosts: server .1/::1, client .2/::2.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hasServerHook, hasXdp, Lab, labEnforcement, sleep, startSpak, tcxIngress, type LabProcess, type SpakProcess } from '../../src/lab/lab.js';

const TC = labEnforcement() === 'tc';
import { ADDR, cleanupHosts, CLI, clientConfig, FAMILIES, serverConfig, skip, SRV, threeHosts } from './common.js';

const PORT = 8080;

describe('spak options and a second client', { skip }, () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.create({ tag: 'options' });
    await threeHosts(lab);
    for (const f of FAMILIES) await lab.startService(SRV, ADDR[f], PORT, 'http');
  });

  after(async () => {
    await lab?.destroy();
  });

  const cleanup = (...procs: (SpakProcess | LabProcess | null | undefined)[]) => cleanupHosts(lab, ...procs);

  /** Waits (bounded) for a process that should exit by itself; fails if it still runs. */
  async function exited(p: LabProcess, what: string, ms = 20_000): Promise<void> {
    await Promise.race([p.exited, sleep(ms)]);
    if (p.running) {
      await p.stop(1_000);
      assert.fail(`${what}: still running after ${ms} ms; output:\n${p.output}`);
    }
  }

  it('6: a second spak client on the same interface is refused; the first still tags; after SIGKILL a new one starts', { timeout: 120_000 }, async () => {
    const server = await startSpak(lab, SRV, 'server', { config: serverConfig([PORT]) });
    let first: SpakProcess | null = null;
    let second: LabProcess | null = null;
    let third: SpakProcess | null = null;
    try {
      first = await startSpak(lab, CLI, 'client', { config: clientConfig([PORT]) });
      const file = lab.writeFile('second-client.json', JSON.stringify({ client: { interface: 'eth0', ...clientConfig([PORT]) } }));
      second = lab.spawnSpak(CLI, ['client', '--config', file]);
      await exited(second, 'the second client');
      assert.equal(second.exitCode, 1, `second client exit: ${second.output}`);
      const lines = second.stderr.trim().split('\n').filter(Boolean);
      assert.equal(lines.length, 1, `one line: ${second.stderr}`);
      assert.match(lines[0]!, /already runs/);
      for (const f of FAMILIES) {
        const r = await lab.httpGet(CLI, ADDR[f], PORT);
        assert.ok(r.ok, `the first client still tags (${f}): ${r.error}`);
      }

      await first.kill('SIGKILL');
      first = null;
      third = await startSpak(lab, CLI, 'client', { config: clientConfig([PORT]) });
      for (const f of FAMILIES) {
        const r = await lab.httpGet(CLI, ADDR[f], PORT);
        assert.ok(r.ok, `a new client after SIGKILL of the first tags (${f}): ${r.error}`);
      }
    } finally {
      await cleanup(second, third, first, server);
    }
  });

  // The xdp run checks --xdp-mode (XDP only); the tc run checks --enforcement tc over "enforcement": "xdp" in the file.
  it(`7a: --config with ${TC ? '--enforcement tc' : '--xdp-mode generic (XDP only)'}, --step-window and --flow-idle: the flags win over the file`, { timeout: 120_000 }, async () => {
    let server: SpakProcess | null = null;
    try {
      server = await startSpak(lab, SRV, 'server', { config: serverConfig([PORT], TC ? { enforcement: 'xdp' } : {}) },
        [...(TC ? ['--enforcement', 'tc'] : ['--xdp-mode', 'generic']), '--step-window', '2', '--flow-idle', '100']);
      if (TC) {
        assert.match(server.banner, /^spak server: TC ingress /, `the flag wins over the file's "xdp": ${server.banner}`);
        assert.equal((await tcxIngress(lab, SRV)).length, 1, 'one tcx program at TC ingress of eth0');
        assert.equal(await hasXdp(lab, SRV), false, 'no XDP');
      } else {
        assert.match(server.banner, /^spak server: XDP \(generic\) /, `the flag wins over the file's default: ${server.banner}`);
        const link = await lab.exec(SRV, ['ip', 'link', 'show', 'eth0'], { check: true });
        assert.match(link.stdout, /xdpgeneric/, `ip link show eth0:\n${link.stdout}`);
      }
    } finally {
      await cleanup(server);
    }
  });

  it('7b: --xdp-mode bogus (with --config) exits 2 with one line and attaches nothing', { timeout: 60_000 }, async () => {
    try {
      const file = lab.writeFile('bogus-server.json', JSON.stringify({ server: { interface: 'eth0', ...serverConfig([PORT]) } }));
      const r = await lab.spak(SRV, ['server', '--config', file, '--xdp-mode', 'bogus']);
      assert.equal(r.code, 2, `exit status: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n').filter(Boolean);
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0]!, /bogus/);
      assert.equal(await hasServerHook(lab, SRV), false, 'nothing attached');
    } finally {
      await cleanup();
    }
  });
});
