// spak-test-timeout: 600
// spak-test-modes: xdp tc
// A privilege drop that cannot work never opens the protected port (issue 13, item 1):
//   - what can be checked is checked before the first attach: a user or group that does not exist,
//     a capability the drop needs missing from the bounding set (setpriv --bounding-set -chown, as
//     a unit without CAP_CHOWN): one error line naming what to fix, non-zero exit, nothing
//     attached, nothing pinned;
//   - a drop that fails after attach (every chown refused with EPERM by strace's fault injection,
//     what a missing CAP_CHOWN did before the check) leaves protection attached and pinned, as a
//     SIGTERM does: a keyless prober from another namespace never connects, during the failure or
//     after it, and a later good start adopts with no gap;
//   - the same for any other step after the attach: a metrics port already taken.
// Hosts: server .1/::1, client .2/::2, third host .3/::3 (the keyless prober).
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { labEnforcement, Lab, netnsInode, SPAK_BIN, SPAK_BPFFS_DIR, SpakProcess } from '../../src/lab/lab.js';
import { ADDR, assertBlocked, assertProberBlocked, FAMILIES, KEY, KEY_ID, OTH, skip, SRV, startProber, threeHosts } from './common.js';
import { serverProgId, startDaemon } from './daemon-helpers.js';

const PORT = 8080;
const TARGETS = FAMILIES.map((f) => ({ addr: ADDR[f], port: PORT }));

describe('a privilege drop that cannot work never opens the port', { skip }, () => {
  let lab: Lab;
  let pinRoot: string;

  before(async () => {
    lab = await Lab.create({ tag: 'privfail' });
    await threeHosts(lab);
    for (const f of FAMILIES) await lab.startService(SRV, ADDR[f], PORT, 'echo');
    pinRoot = path.join(SPAK_BPFFS_DIR, `netns-${netnsInode(lab.host(SRV).ns)}`);
  });

  after(async () => {
    await lab?.cleanupSpak(SRV);
    await lab?.destroy();
  });

  function config(account: { user?: string; group?: string }): string {
    const server = {
      interface: 'eth0', xdpMode: 'generic', keys: [{ id: KEY_ID, secret: KEY }],
      protect: FAMILIES.map((f) => ({ address: ADDR[f], port: PORT })), ...account,
    };
    return lab.writeFile(`spak-${Date.now()}.json`, JSON.stringify({ server }));
  }

  /** `spak server --config file` in SRV (wrapped in `wrap`), run to its exit. */
  async function failingStart(file: string, wrap: string[] = []): Promise<{ code: number | null; stderr: string; output: string }> {
    const mode = labEnforcement() === 'tc' ? ['--enforcement', 'tc'] : [];
    const proc = lab.spawn(SRV, [...wrap, process.execPath, SPAK_BIN, 'server', '--config', file, '--metrics', 'off', ...mode], {}, 'spak server (failing)', 'nsenter');
    const done = await Promise.race([proc.exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 60_000))]);
    if (!done) {
      await proc.stop(2_000);
      assert.fail(`the start did not fail: ${proc.output}`);
    }
    return { code: proc.exitCode, stderr: proc.stderr, output: proc.output };
  }

  async function assertNothingAttached(what: string): Promise<void> {
    assert.equal(await serverProgId(lab, SRV), null, `${what}: no program attached`);
    const pins = existsSync(pinRoot) ? readdirSync(pinRoot) : [];
    assert.deepEqual(pins, [], `${what}: nothing pinned under ${pinRoot}`);
  }

  for (const [what, account, named] of [
    ['a user that does not exist', { user: 'spak-no-such-user' }, /user "spak-no-such-user": no such user/],
    ['a group that does not exist', { user: 'nobody', group: 'spak-no-such-group' }, /group "spak-no-such-group": no such group/],
  ] as const) {
    it(`${what}: one error line, non-zero exit, nothing attached, nothing pinned`, { timeout: 90_000 }, async () => {
      try {
        const r = await failingStart(config(account));
        assert.notEqual(r.code, 0, r.output);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, `one line: ${r.stderr}`);
        assert.match(lines[0]!, named);
        await assertNothingAttached(what);
      } finally {
        await lab.cleanupSpak(SRV);
      }
    });
  }

  it('CAP_CHOWN missing from the bounding set: refused before the first attach, naming it and CapabilityBoundingSet=', { timeout: 90_000 }, async (t) => {
    try {
      const r = await failingStart(config({ user: 'nobody' }), ['setpriv', '--bounding-set', '-chown', '--']);
      assert.notEqual(r.code, 0, r.output);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0]!, /CAP_CHOWN/);
      assert.match(lines[0]!, /CapabilityBoundingSet=/);
      assert.match(lines[0]!, /nothing was attached/);
      t.diagnostic(`the refused start said: ${lines[0]}`);
      await assertNothingAttached('CAP_CHOWN missing');
    } finally {
      await lab.cleanupSpak(SRV);
    }
  });

  it('a step after the attach failing (the metrics port taken) leaves protection attached and pinned', { timeout: 120_000 }, async (t) => {
    const taken = await lab.startService(SRV, '127.0.0.1', 19862, 'echo');
    try {
      const mode = labEnforcement() === 'tc' ? ['--enforcement', 'tc'] : [];
      const proc = lab.spawn(SRV, [process.execPath, SPAK_BIN, 'server', '--config', config({}), '--metrics', '127.0.0.1:19862', ...mode], {}, 'spak server (metrics port taken)', 'nsenter');
      await proc.exited;
      assert.notEqual(proc.exitCode, 0, proc.output);
      const lines = proc.stderr.trim().split('\n').filter((l) => l.startsWith('spak:'));
      assert.equal(lines.length, 1, `one line: ${proc.stderr}`);
      assert.match(lines[0]!, /EADDRINUSE|in use/);
      assert.match(lines[0]!, /protection stays in force on eth0/);
      t.diagnostic(`the failed start said: ${lines[0]}`);
      assert.notEqual(await serverProgId(lab, SRV), null, 'still attached after the failed start');
      assert.ok(existsSync(path.join(pinRoot, 'eth0', 'link')), 'the link stays pinned');
      await assertBlocked(lab, OTH, TARGETS, 'keyless, after the failed start');
    } finally {
      await taken.stop();
      await lab.cleanupSpak(SRV);
    }
  });

  it('a drop failing after attach leaves protection attached and pinned; a good start adopts with no gap', { timeout: 240_000 }, async (t) => {
    let good: SpakProcess | null = null;
    let prober: Awaited<ReturnType<typeof startProber>> | null = null;
    try {
      const file = config({ user: 'nobody' });
      // Every chown refused: the pin directory cannot be handed over, after the attach.
      const inject = ['strace', '-f', '-qq', '-o', '/dev/null', '-e', 'trace=chown,fchownat,lchown,fchown', '-e', 'inject=chown,fchownat,lchown,fchown:error=EPERM', '--'];
      let exited = false;
      const failing = failingStart(file, inject).finally(() => { exited = true; });
      // From the moment the program is in (or the failing start has ended), a keyless prober runs until after the good start.
      const deadline = Date.now() + 60_000;
      while (!exited && Date.now() < deadline && (await serverProgId(lab, SRV)) === null) await new Promise((r) => setTimeout(r, 50));
      prober = await startProber(lab, OTH, TARGETS.map((t) => t.addr), PORT, 120_000);
      const r = await failing;
      assert.notEqual(r.code, 0, r.output);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0]!, /chown .*EPERM.*CAP_CHOWN/, 'names what to fix');
      assert.match(lines[0]!, /protection stays in force on eth0/);
      t.diagnostic(`the failed start said: ${lines[0]}`);

      // After the failure: still attached, still pinned, still refusing keyless connects.
      assert.notEqual(await serverProgId(lab, SRV), null, 'still attached after the failed start');
      assert.ok(existsSync(path.join(pinRoot, 'eth0', 'link')), `the link stays pinned: ${existsSync(pinRoot) ? readdirSync(pinRoot) : 'none'}`);
      await assertBlocked(lab, OTH, TARGETS, 'keyless, after the failed drop');

      // A good start (no fault) adopts what is pinned, drops to nobody, and nothing got through meanwhile.
      good = await startDaemon(lab, SRV, file, ['--metrics', 'off']);
      assert.match(good.banner, /adopted on eth0/);
      await good.proc.waitForLine(/^spak server: running as nobody/, 10_000);
      await assertBlocked(lab, OTH, TARGETS, 'keyless, after the good start');
      const probe = await prober.stop();
      prober = null;
      t.diagnostic(`keyless prober from the failing start's attach to after the good start: ${JSON.stringify(probe)}`);
      assertProberBlocked(probe, 5, 'from the failing start\'s attach to after the good start');
    } finally {
      await prober?.stop().catch(() => undefined);
      await good?.stop().catch(() => undefined);
      await lab.cleanupSpak(SRV);
    }
  });
});
