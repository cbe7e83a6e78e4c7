// spak-test-timeout: 900
// spak-test-modes: xdp tc
// Privilege drop after attach (issue 7, sections 1 and 5): the daemon runs as `nobody` with only
// CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON on its main thread and nothing on the others, read from
// /proc; and it still works: SYN tags, a SIGHUP reload with a key change, sweeps, knocks, a client
// added after the drop. Hosts: server .1/::1, client .2/::2, third host .3/::3 (knocks, no SYN key).
// Nothing here asserts a timing: every wait is bounded and for a state.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Lab, startSpak, type SpakProcess } from '../../src/lab/lab.js';
import { ADDR, assertBlocked, CLI, connectsWithin, FAMILIES, newKnockClient, OTH, skip, spakOk, SRV, threeHosts } from './common.js';
import { reloadOk, startDaemon } from './daemon-helpers.js';

const PORT = 8080;
const KNOCK_PORT = 62202;
const NOBODY = 65534;
const NOGROUP = 65534;
/** CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39). */
const KEPT = (1n << 12n) | (1n << 38n) | (1n << 39n);
const KEY_A = { id: 1, secret: randomBytes(16).toString('hex') };
const KEY_B = { id: 2, secret: randomBytes(16).toString('hex') };

function status(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}
const hex = (s: string | undefined) => BigInt(`0x${s ?? 'x'}`);

describe('privilege drop after attach', { skip }, () => {
  let lab: Lab;
  let etc: string;
  let clientsDir: string;
  let clientHome: string;
  let configFile: string;
  let stateDir: string;

  before(async () => {
    lab = await Lab.create({ tag: 'privdrop' });
    await threeHosts(lab);
    for (const f of FAMILIES) await lab.startService(SRV, ADDR[f], PORT, 'http');
    // What the daemon reads after the drop belongs to its user; the lab's own directory is only traversable.
    chmodSync(lab.dir, 0o711);
    etc = path.join(lab.dir, 'etc');
    clientsDir = path.join(etc, 'clients');
    clientHome = path.join(lab.dir, 'client-home');
    stateDir = path.join(lab.dir, 'state');
    configFile = path.join(etc, 'spak.json');
    mkdirSync(clientsDir, { recursive: true, mode: 0o700 });
    await spakOk(lab, SRV, ['keygen', 'server', '--out', path.join(etc, 'keys')]);
    await newClient('laptop');
    writeFileSync(path.join(etc, 'key-b'), `${KEY_B.secret}\n`, { mode: 0o600 });
    giveToNobody(etc);
    assert.ok((await lab.httpGet(OTH, ADDR.v4, PORT)).ok, 'control: the third host connects without spak');
  });

  after(async () => {
    await lab?.destroy();
  });

  function giveToNobody(dir: string): void {
    chownSync(dir, NOBODY, NOGROUP);
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) giveToNobody(p);
      else chownSync(p, NOBODY, NOGROUP);
    }
  }

  const newClient = (name: string) =>
    newKnockClient(lab, { host: OTH, name, serverPub: path.join(etc, 'keys', 'server.pub'), home: clientHome, clientsDir, policy: { allow: [`tcp/${PORT}`] } });

  function writeConfig(keys: object[]): void {
    const server = {
      interface: 'eth0', user: 'nobody', keys,
      protect: FAMILIES.map((f) => ({ address: ADDR[f], port: PORT })),
      flowIdleSeconds: 5, flowFinSeconds: 5,
      knock: { port: KNOCK_PORT, serverKeyFile: path.join(etc, 'keys', 'server.key'), clientsDir, stateDir },
    };
    writeFileSync(configFile, JSON.stringify({ server }, null, 2), { mode: 0o600 });
    chownSync(configFile, NOBODY, NOGROUP);
  }

  const sigClient = (key: { id: number; secret: string }) => startSpak(lab, CLI, 'client', {
    config: { destinations: FAMILIES.map((f) => ({ address: ADDR[f], port: PORT, keyId: key.id, secret: key.secret })) },
  });


  it('runs as nobody with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON only, and still tags, reloads, sweeps and opens knocks', { timeout: 300_000 }, async () => {
    writeConfig([KEY_A]);
    let server: SpakProcess | null = null;
    let client: SpakProcess | null = null;
    try {
      server = await startDaemon(lab, SRV, configFile, ['--log-level', 'debug']);
      await server.proc.waitForLine(/^spak server: running as nobody/, 10_000);
      const pid = server.proc.pid!;

      // The main thread: the user, no groups, exactly the kept capabilities, no way back.
      const main = status(`/proc/${pid}/status`);
      assert.deepEqual(main.Uid?.split(/\s+/).map(Number), [NOBODY, NOBODY, NOBODY, NOBODY], `Uid: ${main.Uid}`);
      assert.deepEqual(main.Gid?.split(/\s+/).map(Number), [NOGROUP, NOGROUP, NOGROUP, NOGROUP], `Gid: ${main.Gid}`);
      assert.equal(main.Groups, '', 'no supplementary groups');
      assert.equal(hex(main.CapEff), KEPT, `CapEff ${main.CapEff}`);
      assert.equal(hex(main.CapPrm), KEPT, `CapPrm ${main.CapPrm}`);
      assert.equal(hex(main.CapBnd), KEPT, `CapBnd ${main.CapBnd}`);
      assert.equal(hex(main.CapInh), 0n, `CapInh ${main.CapInh}`);
      assert.equal(hex(main.CapAmb), 0n, `CapAmb ${main.CapAmb}`);
      assert.equal(main.NoNewPrivs, '1');
      // Every other thread (V8 and libuv workers): the user too, no capabilities at all, and
      // no_new_privs (carried there by the daemon's seccomp TSYNC).
      const tasks = readdirSync(`/proc/${pid}/task`).filter((t) => Number(t) !== pid);
      assert.ok(tasks.length > 0, 'node runs other threads');
      for (const t of tasks) {
        const s = status(`/proc/${pid}/task/${t}/status`);
        assert.deepEqual(s.Uid?.split(/\s+/).map(Number), [NOBODY, NOBODY, NOBODY, NOBODY], `thread ${t} Uid: ${s.Uid}`);
        assert.equal(hex(s.CapEff), 0n, `thread ${t} CapEff ${s.CapEff}`);
        assert.equal(hex(s.CapPrm), 0n, `thread ${t} CapPrm ${s.CapPrm}`);
        assert.equal(s.NoNewPrivs, '1', `thread ${t} NoNewPrivs`);
      }
      // What it writes later is its own: the pins it replaces on reload, the knock state.
      const pinDir = /pinned at (\S+)/.exec(server.banner)?.[1];
      assert.ok(pinDir, server.banner);
      for (const p of [pinDir, path.join(pinDir, 'spak_config'), stateDir]) assert.equal(statSync(p).uid, NOBODY, `${p} belongs to nobody`);
      // Except the knock replay memory: the daemon writes it through the fd it holds, its user cannot.
      assert.equal(statSync(path.join(pinDir, 'spak_knock_nonces')).uid, 0, 'the replay memory pin stays root\'s');

      // SYN tags, as before the drop.
      client = await sigClient(KEY_A);
      for (const f of FAMILIES) assert.ok((await lab.httpGet(CLI, ADDR[f], PORT)).ok, `key A connects (${f})`);
      await assertBlocked(lab, OTH, FAMILIES.map((f) => ({ addr: ADDR[f], port: PORT })), 'keyless');

      // A knock opens, without root.
      const laptop = path.join(clientHome, 'laptop.spak');
      await spakOk(lab, OTH, ['knock', ADDR.v4, '--port', String(KNOCK_PORT), '--bundle', laptop, '--open', `tcp/${PORT}`]);
      await connectsWithin(lab, OTH, ADDR.v4, PORT, 10_000, 'a knock after the drop');

      // Reload as nobody: key A goes, key B comes; a client added since is rescanned.
      const late = await newClient('late');
      giveToNobody(clientsDir);
      writeConfig([{ id: KEY_B.id, secretFile: path.join(etc, 'key-b') }]);
      const fromOutput = server.proc.output.length;
      const configPin = path.join(pinDir, 'spak_config');
      const pinBefore = statSync(configPin).ino;
      const swaps = await reloadOk(server, 'reload after the drop');
      assert.ok(swaps.eth0 && swaps.eth0.to !== swaps.eth0.from, `a new program went in: ${JSON.stringify(swaps)}`);
      // The new configuration maps are pinned in place of the old ones, by nobody.
      assert.doesNotMatch(server.proc.output, /re-pinning/);
      assert.notEqual(statSync(configPin).ino, pinBefore, 'spak_config was pinned anew');
      assert.equal(statSync(configPin).uid, NOBODY, 'the new pin belongs to nobody');
      await assertBlocked(lab, CLI, FAMILIES.map((f) => ({ addr: ADDR[f], port: PORT })), 'key A after its removal');
      await client.stop();
      client = await sigClient(KEY_B);
      for (const f of FAMILIES) assert.ok((await lab.httpGet(CLI, ADDR[f], PORT)).ok, `key B connects (${f})`);
      // The late client's knock must pass the new program's client map. The first knock opened the
      // third host's IPv4 address only; its IPv6 address is still shut until the late knock.
      await assertBlocked(lab, OTH, [{ addr: ADDR.v6, port: PORT }], 'the third host over IPv6 before the late knock');
      await spakOk(lab, OTH, ['knock', ADDR.v6, '--port', String(KNOCK_PORT), '--bundle', late, '--open', `tcp/${PORT}`]);
      await connectsWithin(lab, OTH, ADDR.v6, PORT, 10_000, 'a knock by a client added after the drop');

      // Sweeps run after the drop and the reload (every 5 s here), without failing.
      await server.proc.waitFor(/"msg":"sweep"/, 20_000, fromOutput);
      assert.doesNotMatch(server.proc.output, /sweep failed|clock refresh failed|knock: housekeeping failed/);
      assert.ok(server.running, 'the daemon runs');
    } finally {
      await client?.stop().catch(() => undefined);
      await server?.stop().catch(() => undefined);
      await lab.cleanupSpak(SRV);
      await lab.cleanupSpak(CLI);
    }
  });
});
