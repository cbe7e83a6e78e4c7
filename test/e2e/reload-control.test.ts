// spak-test-timeout: 600
// spak-test-modes: xdp tc
// `spak server reload [IFACE]` (issue 13, item 3): what `systemctl reload` runs, with no /bin/kill and
// no signal: it asks the daemon on its control socket and waits for the outcome. A good configuration
// is swapped in and the command exits 0; a broken one exits non-zero with the daemon's reason and the
// old configuration stays in force; after the privilege drop (the daemon runs as nobody) it still works.
// Hosts: server .1/::1, client .2/::2 (spak client with key A), third host .3/::3 (keyless).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Lab, startSpak, type SpakProcess } from '../../src/lab/lab.js';
import { ADDR, assertBlocked, assertConnects, CLI, FAMILIES, OTH, skip, SRV, stopAndClean, threeHosts } from './common.js';
import { serverProgId, startDaemon } from './daemon-helpers.js';

const PORT = 8080;
const NOBODY = 65534;
const KEY_A = { id: 1, secret: randomBytes(16).toString('hex') };
const KEY_B = { id: 2, secret: randomBytes(16).toString('hex') };

describe('spak server reload', { skip }, () => {
  let lab: Lab;
  let configFile: string;
  const targets = FAMILIES.map((f) => ({ addr: ADDR[f], port: PORT }));

  before(async () => {
    lab = await Lab.create({ tag: 'reloadctl' });
    await threeHosts(lab);
    for (const f of FAMILIES) await lab.startService(SRV, ADDR[f], PORT, 'http');
    chmodSync(lab.dir, 0o711); // the daemon reads its configuration as nobody in the last case
    configFile = path.join(lab.dir, 'spak.json');
    await assertConnects(lab, OTH, targets, 'control: the third host connects without spak');
  });

  after(async () => {
    await lab?.destroy();
  });

  function writeConfig(keys: object[], user?: string): void {
    const server = { interface: 'eth0', keys, protect: targets.map((t) => ({ address: t.addr, port: t.port })), ...(user ? { user } : {}) };
    writeFileSync(configFile, JSON.stringify({ server }, null, 2), { mode: 0o600 });
    if (user) chownSync(configFile, NOBODY, NOBODY);
  }

  const clientA = () => startSpak(lab, CLI, 'client', {
    config: { destinations: targets.map((t) => ({ address: t.addr, port: t.port, keyId: KEY_A.id, secret: KEY_A.secret })) },
  });

  /** `spak server reload ARGS` in the server's namespace: exit code and output. */
  const reload = async (args: string[]) => {
    const r = await lab.spak(SRV, ['server', 'reload', ...args], { timeoutMs: 120_000 });
    return { code: r.code, out: `${r.stdout}${r.stderr}`, stdout: r.stdout, stderr: r.stderr };
  };

  for (const user of [undefined, 'nobody'] as const) {
    it(`applies a good configuration (exit 0) and refuses a broken one (non-zero, the reason, protection unchanged)${user ? ', after the drop to nobody' : ''}`, { timeout: 240_000 }, async () => {
      writeConfig([KEY_A], user);
      let server: SpakProcess | null = null;
      let client: SpakProcess | null = null;
      try {
        server = await startDaemon(lab, SRV, configFile);
        if (user) await server.proc.waitForLine(/^spak server: running as nobody/, 10_000);
        client = await clientA();
        await assertConnects(lab, CLI, targets, 'key A before any reload');
        await assertBlocked(lab, OTH, targets, 'keyless before any reload');
        const prog0 = await serverProgId(lab, SRV);

        // Broken: not JSON. The command fails with the daemon's line; the program and key A stay.
        writeFileSync(configFile, '{ "server": { "interface": "eth0", ', { mode: 0o600 });
        if (user) chownSync(configFile, NOBODY, NOBODY);
        const bad = await reload(['eth0']);
        assert.notEqual(bad.code, 0, `a broken configuration must fail the reload: ${bad.out}`);
        assert.match(bad.stderr, /^spak server reload: reload rejected, the old configuration stays in force: .*spak\.json/m, bad.out);
        await server.proc.waitForLine(/^spak server: reload rejected/, 10_000);
        assert.equal(await serverProgId(lab, SRV), prog0, 'the program in force is unchanged');
        await assertConnects(lab, CLI, targets, 'key A after the rejected reload');
        await assertBlocked(lab, OTH, targets, 'keyless after the rejected reload');

        // Good: key A goes, key B comes (no interface named: the daemons of this namespace are asked).
        writeConfig([KEY_B], user);
        const good = await reload([]);
        assert.equal(good.code, 0, `a good configuration reloads: ${good.out}`);
        assert.match(good.stdout, /^spak server reload: reloaded .*key ids 2; .*eth0 program \d+ -> \d+/m, good.out);
        assert.notEqual(await serverProgId(lab, SRV), prog0, 'a new program is in force');
        await assertBlocked(lab, CLI, targets, 'key A after its removal');
        await assertBlocked(lab, OTH, targets, 'keyless after the reload');
        assert.ok(server.running, 'the daemon runs on');
        assert.doesNotMatch(server.proc.output, /SIGHUP/);
      } finally {
        await stopAndClean(lab, [SRV, CLI], client, server);
      }
    });
  }

  it('says so when no daemon serves the interface (non-zero)', async () => {
    const r = await reload(['eth0']);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.stderr, /no spak server daemon serves eth0/, r.out);
  });
});
