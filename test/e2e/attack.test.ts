// spak-test-timeout: 900
// spak-test-modes: xdp tc
// The adversarial tester's holes (issue 5, section 2), each as an end-to-end test in the lab.
// Hosts: server .1/::1, client .2/::2 (spak client), third host .3/::3 (no key), and .4/::4 that
// sends through four stacked 802.1Q VLAN-ID-0 devices. Nothing here asserts a timing.
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Lab, labEnforcement, REPO_ROOT, run, sleep, startSpak, type LabProcess, type SpakProcess } from '../../src/lab/lab.js';
import {
  ADDR,
  assertBlocked,
  BLOCKED_MS,
  assertStillEchoes,
  attackPy,
  capture,
  CLI,
  clientConfig,
  delta,
  FAMILIES,
  IDLE_THEN_SEND,
  KEY,
  KEY_ID,
  longLived,
  OTH,
  serverConfig,
  skip,
  SRV,
  threeHosts,
  cleanupHosts,
  assertCapturedSynRefused,
} from './common.js';

const PORT = 8080;
const ECHO_PORT = 9090;
const SCOPE_PORT = 2222;
const VL = 'vl';
const PAGE = 'spak-attack-ok\n';
const VLAN4_SRC = path.join(REPO_ROOT, 'test', 'e2e', 'fixtures', 'vlan4.bpf.c');
const CLANG = ['clang-16', 'clang-19', 'clang'];

describe('spak against an adversary on the LAN', { skip }, () => {
  let lab: Lab;
  let srvMac = '';

  before(async () => {
    lab = await Lab.create({ tag: 'attack' });
    await threeHosts(lab);
    await lab.addHost(VL, 4);
    for (const f of FAMILIES) {
      await lab.startService(SRV, ADDR[f], PORT, 'http', PAGE);
      await lab.startService(SRV, ADDR[f], ECHO_PORT, 'echo');
    }
    srvMac = await lab.mac(SRV);
  });

  after(async () => {
    await lab?.destroy();
  });

  const cleanup = (...procs: (SpakProcess | LabProcess | null | undefined)[]) => cleanupHosts(lab, ...procs);

  /** The keyless VLAN host's egress: every untagged frame leaves in n VID-0 tags (a TC program; replaces an earlier one). */
  async function pushVid0Tags(n: number): Promise<void> {
    const ns = lab.host(VL).ns;
    const obj = path.join(lab.dir, `vlan${n}.bpf.o`);
    let compiled = false;
    for (const cc of CLANG) {
      const r = await run([cc, '-O2', '-g', '-Wall', '-Werror', '-target', 'bpf', `-I/usr/include/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`,
        `-DSPAK_VID0_TAGS=${n}`, '-c', VLAN4_SRC, '-o', obj], { timeoutMs: 60_000 }).catch(() => null);
      if (r?.code === 0) {
        compiled = true;
        break;
      }
    }
    assert.ok(compiled, `compiled ${VLAN4_SRC}`);
    await run(['tc', '-n', ns, 'qdisc', 'del', 'dev', 'eth0', 'clsact']); // an earlier test's, if any
    await run(['tc', '-n', ns, 'qdisc', 'add', 'dev', 'eth0', 'clsact'], { check: true });
    await run(['tc', '-n', ns, 'filter', 'add', 'dev', 'eth0', 'egress', 'bpf', 'da', 'obj', obj, 'sec', 'tc'], { check: true });
  }

  async function nmapOpen(host: string, addr: string, port: number): Promise<{ open: boolean; out: string }> {
    const argv = ['nmap', '-n', '-Pn', '-sS', '-p', String(port), '--max-retries', '1', '--host-timeout', '30s'];
    if (addr.includes(':')) argv.push('-6');
    const r = await lab.exec(host, [...argv, addr], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `nmap ran: ${r.stderr}`);
    return { open: new RegExp(`^${port}/tcp\\s+open\\b`, 'm').test(r.stdout), out: r.stdout };
  }

  const vlanSyn = (f: (typeof FAMILIES)[number]) =>
    attackPy(lab, VL, ['syn', '--iface', 'eth0', '--src', lab.host(VL)[f], '--dst', ADDR[f], '--dst-mac', srvMac,
      '--dport', String(PORT), '--vlan-tags', '4', '--timeout', '3']);

  // At TC ingress the kernel has already moved the outer tag into skb metadata: three are left in the frame.
  const hooks = labEnforcement() === 'tc' ? ['tc'] : ['native', 'generic'];
  it(`1: four stacked VLAN-ID-0 tags: curl, nmap and a crafted 4-tag SYN do not get through (v4, v6, ${labEnforcement() === 'tc' ? 'TC ingress' : 'XDP native and generic'}); drop_unparsed`, { timeout: 400_000 }, async () => {
    // Four 802.1Q VID-0 tags on everything the keyless host sends. Four stacked "type vlan id 0"
    // devices do this where the kernel has 802.1Q (the lab VM's has not): a TC egress program pushing
    // four VID-0 tags does the same (the outermost as the skb's tag, as a vlan device on veth does).
    await pushVid0Tags(4);

    // The frames really carry four tags: tcpdump on the server sees one with four nested VLAN headers.
    const dump = lab.spawn(SRV, ['tcpdump', '-i', 'eth0', '-n', '-e', '--immediate-mode', '-c', '1',
      'vlan and vlan and vlan and vlan'], {}, 'tcpdump 4 tags');
    try {
      await dump.waitForLine(/listening on/, 10_000);
      await lab.tcpConnect(VL, ADDR.v4, PORT);
      await Promise.race([dump.exited, sleep(10_000)]);
    } finally {
      await dump.stop(1_000);
    }
    assert.match(dump.stdout, /vlan 0.*vlan 0.*vlan 0.*vlan 0/, `four VID-0 tags on the wire: ${dump.output}`);

    // Without spak the 4-tag path reaches the service: the test proves something.
    for (const f of FAMILIES) {
      const r = await lab.httpGet(VL, ADDR[f], PORT);
      assert.ok(r.ok && r.body === PAGE, `without spak, curl through 4 VID-0 tags (${f}): ${r.error}`);
      const scan = await nmapOpen(VL, ADDR[f], PORT);
      assert.ok(scan.open, `without spak, nmap through 4 VID-0 tags sees the port open (${f}):\n${scan.out}`);
      assert.equal((await vlanSyn(f)).answer, 'synack', `without spak, the crafted 4-tag SYN is answered (${f})`);
    }

    for (const mode of hooks) {
      const server = await startSpak(lab, SRV, 'server', { config: serverConfig([PORT], mode === 'tc' ? {} : { xdpMode: mode }) });
      try {
        const before = await server.counters();
        for (const f of FAMILIES) {
          const r = await lab.httpGet(VL, ADDR[f], PORT, 3);
          assert.ok(!r.ok, `${mode}: keyless curl through 4 VID-0 tags got the page (${f})`);
          const scan = await nmapOpen(VL, ADDR[f], PORT);
          assert.ok(!scan.open, `${mode}: nmap through 4 VID-0 tags reports the port open (${f}):\n${scan.out}`);
          assert.equal((await vlanSyn(f)).answer, 'none', `${mode}: the crafted 4-tag SYN is answered (${f})`);
        }
        const after = await server.counters();
        assert.ok(delta(before, after, 'drop_unparsed') >= 4, `${mode}: drop_unparsed: ${JSON.stringify(after)}`);
        assert.equal(delta(before, after, 'pass_valid_syn'), 0, `${mode}: nothing passed as valid`);
      } finally {
        await cleanup(server);
      }
    }
  });

  it('1b: two VLAN-ID-0 tags (as deep as the parser follows) are read through: the unprotected port answers, a keyless SYN to the protected one is dropped for its missing tag, not as unparsed', { timeout: 120_000 }, async () => {
    await pushVid0Tags(2);
    const dump = lab.spawn(SRV, ['tcpdump', '-i', 'eth0', '-n', '-e', '--immediate-mode', '-c', '1', 'vlan and vlan'], {}, 'tcpdump 2 tags');
    try {
      await dump.waitForLine(/listening on/, 10_000);
      await lab.tcpConnect(VL, ADDR.v4, ECHO_PORT);
      await Promise.race([dump.exited, sleep(10_000)]);
    } finally {
      await dump.stop(1_000);
    }
    assert.match(dump.stdout, /vlan 0.*vlan 0/, `two VID-0 tags on the wire: ${dump.output}`);
    const server = await startSpak(lab, SRV, 'server', { config: serverConfig([PORT]) });
    try {
      const before = await server.counters();
      for (const f of FAMILIES) {
        assert.deepEqual(await lab.tcpConnect(VL, ADDR[f], ECHO_PORT, 5_000), { ok: true }, `the unprotected port through two tags (${f})`);
        assert.deepEqual(await lab.tcpConnect(VL, ADDR[f], PORT, BLOCKED_MS), { ok: false, error: 'timeout' }, `keyless, protected port, two tags (${f})`);
      }
      const after = await server.counters();
      assert.ok(delta(before, after, 'drop_no_option') >= 2, `drop_no_option: ${JSON.stringify(after)}`);
      assert.equal(delta(before, after, 'drop_unparsed'), 0, `nothing unparsed: ${JSON.stringify(after)}`);
    } finally {
      await cleanup(server);
      await run(['tc', '-n', lab.host(VL).ns, 'qdisc', 'del', 'dev', 'eth0', 'clsact']);
    }
  });

  it('3: daemon dead, a blind spoofed RST and FIN (wrong sequence) never end a live authenticated connection', { timeout: 120_000 }, async () => {
    let server: SpakProcess | null = await startSpak(lab, SRV, 'server', { config: serverConfig([ECHO_PORT], { flowFinSeconds: 2 }) });
    let client: SpakProcess | null = null;
    const conns: Awaited<ReturnType<typeof longLived>>[] = [];
    try {
      client = await startSpak(lab, CLI, 'client', { config: clientConfig([ECHO_PORT]) });
      for (const f of FAMILIES) conns.push(await longLived(lab, CLI, ADDR[f], ECHO_PORT));
      await server.kill('SIGKILL');
      server = null;
      for (const [i, f] of FAMILIES.entries()) {
        await assertStillEchoes(conns[i]!.proc, 2, `${f} after SIGKILL`);
        const spoof = (flags: string) =>
          attackPy(lab, OTH, ['spoof', '--iface', 'eth0', '--src', lab.host(CLI)[f], '--dst', ADDR[f], '--dst-mac', srvMac,
            '--sport', String(conns[i]!.localPort), '--dport', String(ECHO_PORT), '--flags', flags,
            '--seq', String(randomInt(1, 2 ** 31)), '--ack', String(randomInt(1, 2 ** 31))]);
        await spoof('R');
        await spoof('FA');
      }
      await sleep(6_000); // longer than flowFinSeconds (2) and a sweep
      for (const [i, f] of FAMILIES.entries()) await assertStillEchoes(conns[i]!.proc, 5, `${f} after a blind RST and FIN`);
    } finally {
      for (const c of conns) await c.proc.stop(1_000);
      await cleanup(client, server);
    }
  });

  it('4: an idle established connection is not cut (flowIdleSeconds 2, idle 12 s)', { timeout: 120_000 }, async () => {
    const server = await startSpak(lab, SRV, 'server', { config: serverConfig([ECHO_PORT], { flowIdleSeconds: 2 }) });
    let client: SpakProcess | null = null;
    const idle: LabProcess[] = [];
    try {
      client = await startSpak(lab, CLI, 'client', { config: clientConfig([ECHO_PORT]) });
      for (const f of FAMILIES) {
        const p = lab.spawn(CLI, [process.execPath, '-e', IDLE_THEN_SEND, ADDR[f], String(ECHO_PORT), '12000'], {}, `idle ${f}`);
        idle.push(p);
        await p.waitForLine(/^connected$/, 15_000);
      }
      await Promise.race([Promise.all(idle.map((p) => p.exited)), sleep(40_000)]);
      for (const [i, p] of idle.entries()) assert.match(p.output, /^echoed$/m, `${FAMILIES[i]}: after 12 s idle: ${p.output}`);
      assert.ok(server.running, 'the server still runs');
    } finally {
      for (const p of idle) await p.stop(1_000);
      await cleanup(client, server);
    }
  });

  it('5: a service on [::] beside a v4-only protection is warned about; --all-addresses / "*" protect IPv6 too', { timeout: 180_000 }, async () => {
    // Like sshd: one socket on 0.0.0.0:P, one IPv6-only socket on [::]:P.
    const svc = lab.spawn(SRV, ['ncat', '-lk', String(SCOPE_PORT), '--sh-exec', 'cat'], {}, 'ncat on every address');
    let server: SpakProcess | null = null;
    try {
      await lab.waitListening(SRV, '0.0.0.0', SCOPE_PORT);
      const ss = await lab.exec(SRV, ['ss', '-Hltn'], { check: true });
      assert.match(ss.stdout, new RegExp(`\\[::\\]:${SCOPE_PORT}\\b`), `ncat listens on [::]:${SCOPE_PORT}:\n${ss.stdout}`);
      // Without spak both families reach it.
      for (const f of FAMILIES) assert.equal((await lab.tcpConnect(OTH, ADDR[f], SCOPE_PORT)).ok, true, `baseline ${f}`);

      const warning = new RegExp(`port ${SCOPE_PORT}: .* listens on \\[::\\]:${SCOPE_PORT}; IPv6 is not protected`);
      server = await startSpak(lab, SRV, 'server', {
        config: { keys: [{ id: KEY_ID, secret: KEY }], protect: [{ address: ADDR.v4, port: SCOPE_PORT }] },
      });
      await server.proc.waitFor(warning, 10_000);
      const line = server.proc.stderr.split('\n').find((l) => warning.test(l)) ?? '';
      assert.match(line, /IPv6/);
      await server.stop();
      server = null;
      await lab.cleanupSpak(SRV);

      const everywhere: [string, () => Promise<SpakProcess>][] = [
        ['address "*"', () => startSpak(lab, SRV, 'server', {
          config: { keys: [{ id: KEY_ID, secret: KEY }], protect: [{ address: '*', port: SCOPE_PORT }] },
        })],
        ['--all-addresses', () => startSpak(lab, SRV, 'server', {
          args: [ADDR.v4, String(SCOPE_PORT), String(KEY_ID), 'eth0', '--all-addresses'], secret: KEY,
        })],
      ];
      for (const [what, start] of everywhere) {
        server = await start();
        await assertBlocked(lab, OTH, FAMILIES.map((f) => ({ addr: ADDR[f], port: SCOPE_PORT })), `${what}: keyless`);
        assert.doesNotMatch(server.proc.stderr, /warning/, `${what}: no scope warning`);
        await server.stop();
        server = null;
        await lab.cleanupSpak(SRV);
      }
    } finally {
      await cleanup(server, svc);
    }
  });

  it('8: IPv6 fragments: a 3000-byte ping passes, a fragmented SYN to the protected port is dropped (drop_fragment)', { timeout: 120_000 }, async () => {
    const fragSyn = () =>
      attackPy(lab, OTH, ['syn', '--iface', 'eth0', '--src', lab.host(OTH).v6, '--dst', ADDR.v6, '--dst-mac', srvMac,
        '--dport', String(PORT), '--payload', '400', '--frag-size', '200', '--timeout', '3']);
    // ping -6 -s 3000 (iputils is not installed here): a 3000-byte ICMPv6 echo request in fragments.
    const ping = async () =>
      (await attackPy(lab, CLI, ['ping6', '--iface', 'eth0', '--src', lab.host(CLI).v6, '--dst', ADDR.v6, '--dst-mac', srvMac,
        '--size', '3000', '--timeout', '3'])).answer;
    // Without spak: the fragmented SYN reaches the service (it answers), and the ping works.
    assert.equal((await fragSyn()).answer, 'synack', 'without spak the fragmented SYN is answered');
    assert.equal(await ping(), 'reply', 'a fragmented 3000-byte ping without spak is answered');

    const server = await startSpak(lab, SRV, 'server', { config: serverConfig([PORT]) });
    try {
      assert.equal(await ping(), 'reply', 'a fragmented 3000-byte ping to the protected address is answered');
      const before = await server.counters();
      assert.equal((await fragSyn()).answer, 'none', 'a fragmented keyless SYN is answered');
      const after = await server.counters();
      assert.ok(delta(before, after, 'drop_fragment') >= 1, `drop_fragment: ${JSON.stringify(after)}`);
    } finally {
      await cleanup(server);
    }
  });

  it('9: source binding: the client connects; its tag used first from a third host\'s address gets no SYN-ACK (drop_bad_tag)', { timeout: 180_000 }, async () => {
    const server = await startSpak(lab, SRV, 'server', { config: serverConfig([PORT], {}, { bindSource: true }) });
    let client: SpakProcess | null = null;
    try {
      client = await startSpak(lab, CLI, 'client', { config: clientConfig([PORT], { bindSource: true }) });
      for (const f of FAMILIES) {
        const r = await lab.httpGet(CLI, ADDR[f], PORT);
        assert.ok(r.ok && r.body === PAGE, `the client connects with a source-bound tag (${f}): ${r.error}`);
      }
      // An on-path attacker: the client's neighbour entries for the server point at the third host
      // (ARP / ND poisoning), so the client's tagged SYN reaches the third host, not the server.
      const othMac = await lab.mac(OTH);
      const pcaps: Record<string, string> = {};
      try {
        for (const f of FAMILIES)
          await lab.exec(CLI, ['ip', 'neigh', 'replace', ADDR[f], 'lladdr', othMac, 'dev', 'eth0', 'nud', 'permanent'], { check: true });
        for (const f of FAMILIES)
          pcaps[f] = await capture(lab, OTH, PORT, `bound-${f}`, async () => {
            assert.equal((await lab.tcpConnect(CLI, ADDR[f], PORT, 1_500)).ok, false, 'the client\'s SYN went to the third host');
          });
      } finally {
        for (const f of FAMILIES) await lab.exec(CLI, ['ip', 'neigh', 'del', ADDR[f], 'dev', 'eth0']).catch(() => undefined);
      }
      for (const f of FAMILIES) {
        const o = { pcap: pcaps[f]!, src: lab.host(OTH)[f], dst: ADDR[f], dstMac: srvMac, dport: PORT };
        await assertCapturedSynRefused(lab, server, o, 'drop_bad_tag', `the client's bound tag from the third host's address, ${f}`);
      }
    } finally {
      await cleanup(client, server);
    }
  });
});
