// spak-test-timeout: 900
// Several interfaces in one daemon (issue 7, section 1). The server has eth0 on the LAN (client
// .2, keyless .3) and eth1 on a link of its own to host "far" (198.51.100.130, 2001:db8:1::2);
// eth0 is served in native XDP mode, eth1 in generic mode, from one config. Starting is all or
// nothing. Nothing here asserts a timing.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hasXdp, Lab, netnsInode, run, SPAK_BPFFS_DIR, startSpak, type SpakProcess } from '../../src/lab/lab.js';
import {
  ADDR, assertBlocked, assertConnects, CLI, connectsWithin, FAMILIES, KEY, KEY_ID, newKnockClient, OTH, skip, spakOk, SRV, stopAndClean, threeHosts,
} from './common.js';
import { startDaemon } from './daemon-helpers.js';

const PORT = 8080;
const FAR = 'far';
const KNOCK_PORT = 62203;

describe('one daemon, two interfaces', { skip }, () => {
  let lab: Lab;
  let eth1: { v4: string; v6: string };
  let configFile: string;

  before(async () => {
    lab = await Lab.create({ tag: 'ifaces' });
    await threeHosts(lab);
    const h = await lab.addLinkedHost(FAR, SRV, 'eth1', 1);
    eth1 = { v4: h.viaV4, v6: h.viaV6 };
    for (const a of [ADDR.v4, ADDR.v6, eth1.v4, eth1.v6]) await lab.startService(SRV, a, PORT, 'http');
    configFile = path.join(lab.dir, 'spak.json');
    // Control: without spak both sides reach the service, so a refusal later is spak's doing.
    assert.ok((await lab.httpGet(OTH, ADDR.v4, PORT)).ok, 'control: third host over eth0');
    for (const a of [eth1.v4, eth1.v6]) assert.ok((await lab.httpGet(FAR, a, PORT)).ok, `control: far host over eth1 to ${a}`);
  });

  after(async () => {
    await lab?.destroy();
  });

  const eth0Targets = FAMILIES.map((f) => ({ addr: ADDR[f], port: PORT }));
  const eth1Targets = () => [eth1.v4, eth1.v6].map((addr) => ({ addr, port: PORT }));

  function writeConfig(interfaces: { name: string; xdpMode?: string }[], extra: Record<string, unknown> = {}): void {
    const protect = [ADDR.v4, ADDR.v6, eth1.v4, eth1.v6].map((address) => ({ address, port: PORT }));
    writeFileSync(configFile, JSON.stringify({ server: { interfaces, keys: [{ id: KEY_ID, secret: KEY }], protect, ...extra } }, null, 2));
  }


  const clientFor = (host: string, addrs: string[]) =>
    startSpak(lab, host, 'client', { config: { destinations: addrs.map((address) => ({ address, port: PORT, keyId: KEY_ID, secret: KEY })) } });

  const connects = (host: string, addrs: string[], what: string) => assertConnects(lab, host, addrs.map((addr) => ({ addr, port: PORT })), what);

  async function cleanup(...procs: ({ stop(): Promise<unknown> } | null | undefined)[]): Promise<void> {
    await stopAndClean(lab, [], ...procs);
    await lab.serverStop(SRV, 'eth1').catch(() => undefined);
    await stopAndClean(lab, [SRV, CLI, FAR]);
  }

  async function xdpFlavour(ifname: string): Promise<string> {
    const r = await run(['ip', '-n', lab.host(SRV).ns, 'link', 'show', ifname], { check: true });
    return /\bxdpgeneric\b/.test(r.stdout) ? 'generic' : /\bxdp\b/.test(r.stdout) ? 'native' : 'none';
  }

  it('protects eth0 (native) and eth1 (generic); a restart adopts both', { timeout: 240_000 }, async () => {
    writeConfig([{ name: 'eth0', xdpMode: 'native' }, { name: 'eth1', xdpMode: 'generic' }]);
    let server: SpakProcess | null = null;
    let cli: SpakProcess | null = null;
    let farClient: SpakProcess | null = null;
    try {
      server = await startDaemon(lab, SRV, configFile);
      await server.proc.waitForLine(/attached to eth1/, 10_000);
      assert.match(server.proc.stdout, /^spak server: XDP \(native\) attached to eth0 /m);
      assert.match(server.proc.stdout, /^spak server: XDP \(generic\) attached to eth1 /m);
      assert.equal(await xdpFlavour('eth0'), 'native', 'the kernel: eth0 native');
      assert.equal(await xdpFlavour('eth1'), 'generic', 'the kernel: eth1 generic');

      await assertBlocked(lab, OTH, eth0Targets, 'keyless over eth0');
      await assertBlocked(lab, FAR, eth1Targets(), 'keyless over eth1');
      cli = await clientFor(CLI, [ADDR.v4, ADDR.v6]);
      farClient = await clientFor(FAR, [eth1.v4, eth1.v6]);
      await connects(CLI, [ADDR.v4, ADDR.v6], 'tagged over eth0');
      await connects(FAR, [eth1.v4, eth1.v6], 'tagged over eth1');
      await farClient.stop(); // the far host is keyless again
      farClient = null;

      const { output } = await server.stop();
      assert.equal(server.proc.exitCode, 0, output);
      assert.match(output, /protection stays in force on eth0, eth1/);
      server = null;
      assert.ok((await hasXdp(lab, SRV, 'eth0')) && (await hasXdp(lab, SRV, 'eth1')), 'both stay protected with no daemon');
      await assertBlocked(lab, FAR, eth1Targets(), 'keyless over eth1 with no daemon');

      server = await startDaemon(lab, SRV, configFile);
      await server.proc.waitForLine(/adopted on eth1/, 10_000);
      assert.match(server.proc.stdout, /^spak server: XDP \(native\) adopted on eth0 /m);
      assert.match(server.proc.stdout, /^spak server: XDP \(generic\) adopted on eth1 /m);
      await assertBlocked(lab, OTH, eth0Targets, 'keyless over eth0 after the restart');
      await assertBlocked(lab, FAR, eth1Targets(), 'keyless over eth1 after the restart');
      await connects(CLI, [ADDR.v4, ADDR.v6], 'tagged over eth0 after the restart');
      farClient = await clientFor(FAR, [eth1.v4, eth1.v6]);
      await connects(FAR, [eth1.v4, eth1.v6], 'tagged over eth1 after the restart');
    } finally {
      await cleanup(cli, farClient, server);
    }
  });

  it('knock mode on both: clients reach either interface\'s XDP, grants open on the interface the knocker uses', { timeout: 240_000 }, async () => {
    const keys = path.join(lab.dir, 'knock-keys');
    const clientsDir = path.join(lab.dir, 'knock-clients');
    const home = path.join(lab.dir, 'knock-home');
    mkdirSync(clientsDir, { recursive: true });
    await spakOk(lab, SRV, ['keygen', 'server', '--out', keys]);
    const bundle = await newKnockClient(lab, { host: SRV, name: 'roamer', serverPub: path.join(keys, 'server.pub'), home, clientsDir, policy: { allow: [`tcp/${PORT}`] } });
    const knock = { port: KNOCK_PORT, serverKeyFile: path.join(keys, 'server.key'), clientsDir, stateDir: path.join(lab.dir, 'knock-state') };
    writeConfig([{ name: 'eth0', xdpMode: 'native' }, { name: 'eth1', xdpMode: 'generic' }], { knock });
    let server: SpakProcess | null = null;
    try {
      server = await startDaemon(lab, SRV, configFile);
      await server.proc.waitForLine(/spak server: knock port/, 10_000);
      await assertBlocked(lab, OTH, eth0Targets, 'the third host before its knock');
      await assertBlocked(lab, FAR, eth1Targets(), 'the far host before its knock');
      // The same client knocks from both sides: over eth0 at the LAN address, over eth1 at eth1's.
      await spakOk(lab, OTH, ['knock', ADDR.v4, '--port', String(KNOCK_PORT), '--bundle', bundle, '--open', `tcp/${PORT}`]);
      await connectsWithin(lab, OTH, ADDR.v4, PORT, 10_000, 'the third host after its knock over eth0');
      await spakOk(lab, FAR, ['knock', eth1.v4, '--port', String(KNOCK_PORT), '--bundle', bundle, '--open', `tcp/${PORT}`]);
      await connectsWithin(lab, FAR, eth1.v4, PORT, 10_000, 'the far host after its knock over eth1');
      const counters = await server.counters();
      assert.equal(counters.knock_accepted, 2, `both knocks accepted: ${JSON.stringify(counters)}`);
    } finally {
      await cleanup(server);
    }
  });

  it('starts all or nothing: a missing second interface undoes the fresh first, leaves an adopted one in force', { timeout: 180_000 }, async () => {
    const { ns } = lab.host(SRV);
    const eth0Pins = path.join(SPAK_BPFFS_DIR, `netns-${netnsInode(ns)}`, 'eth0');
    try {
      // Fresh: eth0 attaches, eth9 does not exist; eth0 must be left as it was.
      writeConfig([{ name: 'eth0', xdpMode: 'native' }, { name: 'eth9' }]);
      const r = await lab.spak(SRV, ['server', '--config', configFile]);
      assert.notEqual(r.code, 0, 'the start fails');
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.match(r.stderr, /^spak: eth9: /);
      assert.equal(await hasXdp(lab, SRV, 'eth0'), false, `eth0's fresh attach was undone (${ns})`);
      assert.equal(existsSync(eth0Pins), false, 'nothing left pinned for eth0');
      assert.ok((await lab.httpGet(OTH, ADDR.v4, PORT)).ok, 'eth0 is open again, as before the start');

      // Adopted: a daemon served eth0 and went; the failed start leaves its protection in force.
      writeConfig([{ name: 'eth0', xdpMode: 'native' }]);
      const first = await startDaemon(lab, SRV, configFile);
      await first.stop();
      writeConfig([{ name: 'eth0', xdpMode: 'native' }, { name: 'eth9' }]);
      const again = await lab.spak(SRV, ['server', '--config', configFile]);
      assert.notEqual(again.code, 0, 'the start fails');
      assert.match(again.stderr, /^spak: eth9: /);
      assert.ok(await hasXdp(lab, SRV, 'eth0'), 'the adopted protection stays');
      assert.ok(existsSync(path.join(eth0Pins, 'link')), 'its pins stay');
      await assertBlocked(lab, OTH, eth0Targets, 'keyless over eth0 after the failed start');
    } finally {
      await cleanup();
    }
  });
});
