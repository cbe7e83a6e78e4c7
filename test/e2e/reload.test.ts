// spak-test-timeout: 900
// spak-test-modes: xdp tc
// SIGHUP reload (issue 7, sections 1 and 5): a key rotation while connections transfer data, and
// bad configurations kept out. Hosts: server .1/::1; client A .2 (spak client, key id 1), client B
// .3 (spak client, key id 2), keyless .4. The config file is rewritten between SIGHUPs.
// Nothing here asserts a timing: every wait is bounded and for a state.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Lab, startSpak, type SpakProcess } from '../../src/lab/lab.js';
import { ADDR, assertBlocked, assertConnects, assertStillEchoes, delta, FAMILIES, longLived, skip, SRV, stopAndClean } from './common.js';
import { reloadOk, serverProgId, sighup, startDaemon } from './daemon-helpers.js';

const ECHO_PORT = 9090;
const HTTP_PORT = 8080;
const CLA = 'cla';
const CLB = 'clb';
const NOK = 'nok';
const KEY_A = { id: 1, secret: randomBytes(16).toString('hex') };
const KEY_B = { id: 2, secret: randomBytes(16).toString('hex') };

describe('SIGHUP reload', { skip }, () => {
  let lab: Lab;
  let configFile: string;
  let keyBFile: string;

  before(async () => {
    lab = await Lab.create({ tag: 'reload' });
    await lab.addHost(SRV, 1);
    await lab.addHost(CLA, 2);
    await lab.addHost(CLB, 3);
    await lab.addHost(NOK, 4);
    for (const f of FAMILIES) {
      await lab.startService(SRV, ADDR[f], ECHO_PORT, 'echo');
      await lab.startService(SRV, ADDR[f], HTTP_PORT, 'http');
    }
    configFile = path.join(lab.dir, 'spak.json');
    keyBFile = lab.writeFile('key-b', `${KEY_B.secret}\n`);
    // Control: without spak every host connects, so a refusal later is spak's doing.
    for (const h of [CLA, CLB, NOK]) assert.ok((await lab.tcpConnect(h, ADDR.v4, HTTP_PORT, 2_000)).ok, `control: ${h}`);
  });

  after(async () => {
    await lab?.destroy();
  });

  /** Writes the server config with these keys (key B from its file). */
  function writeConfig(keys: ({ id: number; secret: string } | { id: number; secretFile: string })[]): void {
    const protect = [ECHO_PORT, HTTP_PORT].flatMap((port) => FAMILIES.map((f) => ({ address: ADDR[f], port })));
    writeFileSync(configFile, JSON.stringify({ server: { interface: 'eth0', keys, protect } }, null, 2), { mode: 0o600 });
  }
  /** Key B as the config names it: from its own file. */
  const keyB = () => ({ id: KEY_B.id, secretFile: keyBFile });

  const client = (host: string, key: { id: number; secret: string }) => startSpak(lab, host, 'client', {
    config: { destinations: [ECHO_PORT, HTTP_PORT].flatMap((port) => FAMILIES.map((f) => ({ address: ADDR[f], port, keyId: key.id, secret: key.secret }))) },
  });

  const connects = (host: string, what: string) => assertConnects(lab, host, FAMILIES.map((f) => ({ addr: ADDR[f], port: HTTP_PORT })), what);
  const refused = (host: string, what: string) =>
    assertBlocked(lab, host, FAMILIES.map((f) => ({ addr: ADDR[f], port: HTTP_PORT })), what);

  const cleanup = (...procs: ({ stop(): Promise<unknown> } | null | undefined)[]) => stopAndClean(lab, [SRV, CLA, CLB], ...procs);

  it('rotates a key with overlap while connections transfer: both ids valid together, the old refused after, nothing dropped', { timeout: 240_000 }, async () => {
    writeConfig([KEY_A]);
    let server: SpakProcess | null = null;
    let a: SpakProcess | null = null;
    let b: SpakProcess | null = null;
    const conns: Awaited<ReturnType<typeof longLived>>[] = [];
    try {
      server = await startDaemon(lab, SRV, configFile);
      a = await client(CLA, KEY_A);
      b = await client(CLB, KEY_B);
      await connects(CLA, 'key A before the rotation');
      await refused(CLB, 'key B before the rotation');
      await refused(NOK, 'keyless before the rotation');
      for (const f of FAMILIES) conns.push(await longLived(lab, CLA, ADDR[f], ECHO_PORT));

      // Overlap: [A, B].
      const before = await server.counters();
      writeConfig([KEY_A, keyB()]);
      const prog0 = await serverProgId(lab, SRV);
      const swap1 = await reloadOk(server, 'reload to [A, B]');
      assert.equal(swap1.eth0?.from, prog0, 'the reload replaced the attached program');
      assert.equal(await serverProgId(lab, SRV), swap1.eth0?.to, 'the kernel runs the new program');
      await connects(CLA, 'key A during the overlap');
      await connects(CLB, 'key B during the overlap');
      await refused(NOK, 'keyless during the overlap');
      for (const [i, c] of conns.entries()) await assertStillEchoes(c.proc, 3, `key-A connection ${FAMILIES[i]} across the first reload`);
      conns.push(await longLived(lab, CLB, ADDR.v4, ECHO_PORT));

      // The old key goes: [B].
      writeConfig([keyB()]);
      const swap2 = await reloadOk(server, 'reload to [B]');
      assert.equal(swap2.eth0?.from, swap1.eth0?.to);
      assert.equal(await serverProgId(lab, SRV), swap2.eth0?.to, 'the kernel runs the newest program');
      await refused(CLA, 'key A after its removal');
      await connects(CLB, 'key B after the rotation');
      await refused(NOK, 'keyless after the rotation');
      for (const c of conns) await assertStillEchoes(c.proc, 3, `${c.proc.name} across both reloads`);

      // The counters live in a state map: the reloads kept them. The flows did too: no packet
      // of an established connection missed its flow.
      const counters = await server.counters();
      assert.ok((counters.pass_valid_syn ?? 0) >= 6, `valid SYNs counted across the reloads: ${JSON.stringify(counters)}`);
      assert.ok((counters.pass_valid_syn ?? 0) >= (before.pass_valid_syn ?? 0), 'the counters were not reset');
      assert.equal(delta(before, counters, 'drop_flow_miss'), 0, `no flow lost across the reloads: ${JSON.stringify(counters)}`);
      assert.ok(server.running, 'the daemon runs');
    } finally {
      for (const c of conns) await c.proc.stop(1_000);
      await cleanup(a, b, server);
    }
  });

  it('keeps a bad configuration out: bad JSON, a bad field, an unreadable key file, a changed interface', { timeout: 240_000 }, async () => {
    writeConfig([KEY_A]);
    let server: SpakProcess | null = null;
    let a: SpakProcess | null = null;
    try {
      const logFile = path.join(lab.dir, 'bad-reloads.log');
      server = await startDaemon(lab, SRV, configFile, ['--log-file', logFile]);
      a = await client(CLA, KEY_A);
      await connects(CLA, 'before the bad reloads');
      const conn = await longLived(lab, CLA, ADDR.v4, ECHO_PORT);
      try {
        const progBefore = await serverProgId(lab, SRV);
        const unreadable = path.join(lab.dir, 'no-such-key');
        const good = { server: { interface: 'eth0', keys: [KEY_A], protect: [{ address: ADDR.v4, port: HTTP_PORT }] } };
        const bad: [string, string, RegExp][] = [
          ['bad JSON', '{"server": {"interface": "eth0", ', /not valid JSON/],
          ['a port out of range', JSON.stringify({ server: { ...good.server, protect: [{ address: ADDR.v4, port: 70000 }] } }), /server\.protect\[0\]\.port/],
          ['an unknown field', JSON.stringify({ server: { ...good.server, keyz: [] } }), /keyz/],
          ['an unreadable key file', JSON.stringify({ server: { ...good.server, keys: [KEY_A, { id: 2, secretFile: unreadable }] } }), /cannot read .*no-such-key/],
          ['a changed interface', JSON.stringify({ server: { ...good.server, interface: 'eth1' } }), /restart needed/],
        ];
        for (const [what, text, reason] of bad) {
          // Each must fail for its own reason: the line names it.
          writeFileSync(configFile, text);
          const line = await sighup(server);
          assert.match(line, /^spak server: reload rejected, the old configuration stays in force: /, what);
          assert.match(line, reason, `${what}: the reason is named`);
          assert.ok(server.running, `${what}: the daemon runs on`);
          assert.equal(await serverProgId(lab, SRV), progBefore, `${what}: the program was not replaced`);
          await connects(CLA, `key A after ${what}`);
          await refused(NOK, `keyless after ${what}`);
        }
        await assertStillEchoes(conn.proc, 3, 'the connection across the rejected reloads');
        // The log file has each rejection as a decision, with its reason.
        const rejected = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"reload-rejected"')).map((l) => JSON.parse(l) as { reason: string });
        assert.equal(rejected.length, bad.length, `one reload-rejected record per bad reload: ${JSON.stringify(rejected)}`);
        for (const [i, [what, , reason]] of bad.entries()) assert.match(rejected[i]!.reason, reason, `${what}: the logged reason`);
        // And a good one is taken again.
        writeConfig([KEY_A]);
        await reloadOk(server, 'a good reload after the bad ones');
        await connects(CLA, 'key A after the good reload');
        await refused(NOK, 'keyless after the good reload');
      } finally {
        await conn.proc.stop(1_000);
      }
    } finally {
      await cleanup(a, server);
    }
  });

  it('a server started without --config has nothing to reload: SIGHUP says so and changes nothing', { timeout: 120_000 }, async () => {
    let server: SpakProcess | null = null;
    try {
      server = await startSpak(lab, SRV, 'server', { args: [ADDR.v4, String(HTTP_PORT), String(KEY_A.id), 'eth0'], secret: KEY_A.secret });
      const prog = await serverProgId(lab, SRV);
      const line = await sighup(server);
      assert.match(line, /reload rejected, the old configuration stays in force: started without --config: nothing to reload/);
      assert.ok(server.running, 'the daemon runs on');
      assert.equal(await serverProgId(lab, SRV), prog, 'the program was not replaced');
      await assertBlocked(lab, NOK, [{ addr: ADDR.v4, port: HTTP_PORT }], 'keyless after the SIGHUP');
    } finally {
      await cleanup(server);
    }
  });
});
