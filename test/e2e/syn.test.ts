// spak-test-modes: xdp tc
// End to end, SYN mode: a LAN of three namespaces (server .1/::1, client .2/::2, third host .3/::3),
// real services on the server, the real `spak server` / `spak client` processes, real packets.
// Nothing here asserts a timing: "times out" means connect() did not complete within a bound.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lastEcho, LONG_LIVED, replayPy } from './common.js';
import {
  counter,
  hasServerHook,
  Lab,
  REPO_ROOT,
  startSpak,
  sleep,
  type LabProcess,
  type SpakProcess,
} from '../../src/lab/lab.js';

const KEY = randomBytes(16).toString('hex');
const WRONG_KEY = randomBytes(16).toString('hex');
const KEY_ID = 1;
const PORT = 8080;
const ECHO_PORT = 9090;
const PAGE = 'spak-e2e-ok\n';
const SRV = 'srv';
const CLI = 'cli';
const OTH = 'oth';
/** connect() bound for "it does not get through": the SYN and at least one retransmission. */
const BLOCKED_MS = 2_500;
const PCAP_HEADER_LEN = 24;

const ADDR = { v4: '198.51.100.1', v6: '2001:db8::1' } as const;
type Family = keyof typeof ADDR;
const FAMILIES: Family[] = ['v4', 'v6'];

const skip =
  typeof process.geteuid === 'function' && process.geteuid() !== 0
    ? 'needs root'
    : !existsSync(path.join(REPO_ROOT, 'build', 'server.bpf.o'))
      ? 'run make build first'
      : false;

function serverConfig(port = PORT) {
  return {
    keys: [{ id: KEY_ID, secret: KEY }],
    protect: FAMILIES.map((f) => ({ address: ADDR[f], port })),
  };
}

function clientConfig(secret = KEY, port = PORT) {
  return { destinations: FAMILIES.map((f) => ({ address: ADDR[f], port, keyId: KEY_ID, secret })) };
}


describe('spak SYN mode, end to end', { skip }, () => {
  let lab: Lab;
  const services: LabProcess[] = [];

  before(async () => {
    lab = await Lab.create({ tag: 'syn' });
    await lab.addHost(SRV, 1);
    await lab.addHost(CLI, 2);
    await lab.addHost(OTH, 3);
    for (const f of FAMILIES) services.push(await lab.startService(SRV, ADDR[f], PORT, 'http', PAGE));
  });

  after(async () => {
    await lab?.destroy();
  });

  /** Runs fn with a spak server protecting PORT (and a client when clientSecret is given), stops them after. */
  async function withSpak(
    clientSecret: string | null,
    fn: (server: SpakProcess, client: SpakProcess | null) => Promise<void>,
  ): Promise<void> {
    const server = await startSpak(lab, SRV, 'server', { config: serverConfig() });
    let client: SpakProcess | null = null;
    try {
      if (clientSecret !== null) client = await startSpak(lab, CLI, 'client', { config: clientConfig(clientSecret) });
      await fn(server, client);
    } finally {
      await client?.stop();
      await server.stop();
      await lab.serverStop(SRV); // SIGTERM leaves protection in force: each case starts without it
    }
  }

  it('baseline: without spak the service answers every host (v4, v6)', { timeout: 60_000 }, async () => {
    for (const host of [CLI, OTH])
      for (const f of FAMILIES) {
        const r = await lab.httpGet(host, ADDR[f], PORT);
        assert.ok(r.ok, `${host} -> ${ADDR[f]}: ${r.error}`);
        assert.equal(r.body, PAGE);
      }
  });

  it('a: server without client program: connect() times out from the client and a third host (v4, v6)', { timeout: 60_000 }, async () => {
    await withSpak(null, async (server) => {
      const attempts = [CLI, OTH].flatMap((host) => FAMILIES.map((f) => ({ host, f })));
      const results = await Promise.all(attempts.map(({ host, f }) => lab.tcpConnect(host, ADDR[f], PORT, BLOCKED_MS)));
      results.forEach((r, i) => assert.deepEqual(r, { ok: false, error: 'timeout' }, `${attempts[i]!.host} -> ${ADDR[attempts[i]!.f]}`));
      const c = await server.counters();
      assert.ok(counter(c, 'drop_no_option') >= attempts.length, `drop_no_option: ${JSON.stringify(c)}`);
      assert.equal(counter(c, 'pass_valid_syn'), 0);
    });
  });

  it('b: with spak client: connects and the service answers (v4, v6); pass_valid_syn counted', { timeout: 60_000 }, async () => {
    await withSpak(KEY, async (server, client) => {
      for (const f of FAMILIES) {
        const r = await lab.httpGet(CLI, ADDR[f], PORT);
        assert.ok(r.ok, `client -> ${ADDR[f]}: ${r.error}`);
        assert.equal(r.body, PAGE);
      }
      // The third host, without the key, is still refused meanwhile.
      for (const f of FAMILIES) assert.deepEqual(await lab.tcpConnect(OTH, ADDR[f], PORT, BLOCKED_MS), { ok: false, error: 'timeout' });
      const sc = await server.counters();
      assert.ok(counter(sc, 'pass_valid_syn') >= 2, `server counters: ${JSON.stringify(sc)}`);
      assert.ok(counter(sc, 'pass_flow') >= 1, `server counters: ${JSON.stringify(sc)}`);
      const cc = await client!.counters();
      assert.ok(counter(cc, 'injected') >= 2, `client counters: ${JSON.stringify(cc)}`);
    });
  });

  it('c: client with a wrong key: connect() times out (v4, v6); drop_bad_tag counted', { timeout: 60_000 }, async () => {
    await withSpak(WRONG_KEY, async (server, client) => {
      const before = await server.counters();
      for (const f of FAMILIES) assert.deepEqual(await lab.tcpConnect(CLI, ADDR[f], PORT, BLOCKED_MS), { ok: false, error: 'timeout' });
      const after = await server.counters();
      const bad = counter(after, 'drop_bad_tag') - counter(before, 'drop_bad_tag');
      assert.ok(bad >= 2, `drop_bad_tag rose by ${bad}: ${JSON.stringify(after)}`);
      assert.equal(counter(after, 'pass_valid_syn'), 0);
      assert.ok(counter(await client!.counters(), 'injected') >= 2, 'the client did tag its SYNs');
    });
  });

  for (const f of FAMILIES) {
    it(`d: a captured client SYN replayed from a third host gets no SYN-ACK; drop_replay counted (${f})`, { timeout: 90_000 }, async () => {
      const pcap = path.join(lab.dir, `syn-${f}.pcap`);
      const srvMac = await lab.mac(SRV);
      const replay = (toPort?: number) => replayPy(lab, OTH, {
        pcap, src: lab.host(OTH)[f], dst: ADDR[f], dstMac: srvMac, dport: PORT, ...(toPort === undefined ? {} : { toPort }),
      });
      await withSpak(KEY, async (server) => {
        // --immediate-mode: without it packets wait in the capture ring for up to a second.
        const dump = lab.spawn(SRV, ['tcpdump', '-i', 'eth0', '-n', '-U', '--immediate-mode', '-Z', 'root', '-w', pcap,
          'tcp', 'dst', 'port', String(PORT)]);
        try {
          await dump.waitForLine(/listening on/, 10_000);
          const r = await lab.httpGet(CLI, ADDR[f], PORT);
          assert.ok(r.ok, `the real client connects: ${r.error}`);
          // The first packet the filter takes is the client's SYN: wait until it is in the file.
          for (let i = 0; i < 100 && !(existsSync(pcap) && statSync(pcap).size > PCAP_HEADER_LEN); i++) await sleep(50);
        } finally {
          await dump.stop();
        }
        assert.ok(existsSync(pcap) && statSync(pcap).size > PCAP_HEADER_LEN, `tcpdump captured the SYN: ${dump.output}`);

        // Control: the same forged SYN to a port spak does not protect (nothing listens) is answered (RST),
        // so "no answer" below is the server's doing, not the script's.
        const control = await replay(PORT + 1);
        assert.equal(control.answer, 'rst', 'an unprotected closed port answers the forged SYN with RST');

        const before = await server.counters();
        const out = await replay();
        assert.equal(out.captured?.src, lab.host(CLI)[f], 'the captured SYN is the client host\'s');
        assert.equal(out.captured?.has_spak_option, true, 'the captured SYN carries the spak option');
        assert.equal(out.answer, 'none', 'no SYN-ACK (nor anything) for the replayed SYN');
        const after = await server.counters();
        const replays = counter(after, 'drop_replay') - counter(before, 'drop_replay');
        assert.ok(replays >= 1, `drop_replay rose by ${replays}: ${JSON.stringify(after)}`);
        assert.equal(counter(after, 'pass_valid_syn'), counter(before, 'pass_valid_syn'), 'the replay was not accepted');
      });
    });
  }

  it('e: connections open before the server starts keep working; a new connect() times out (v4, v6)', { timeout: 90_000 }, async () => {
    const echo: LabProcess[] = [];
    const conns: LabProcess[] = [];
    let server: SpakProcess | null = null;
    try {
      for (const f of FAMILIES) echo.push(await lab.startService(SRV, ADDR[f], ECHO_PORT, 'echo'));
      for (const f of FAMILIES) {
        const c = lab.spawn(CLI, [process.execPath, '-e', LONG_LIVED, ADDR[f], String(ECHO_PORT)], {}, `long-lived ${f}`);
        conns.push(c);
        await c.waitForLine(/^echo 2$/, 15_000);
      }
      server = await startSpak(lab, SRV, 'server', { config: serverConfig(ECHO_PORT) });
      const kept = Number(/(\d+) existing connection\(s\) kept/.exec(server.banner)?.[1] ?? -1);
      assert.ok(kept >= 2, `the server kept the open connections: ${server.banner}`);
      const marks = conns.map((c) => ({ from: c.output.length, last: lastEcho(c.output) }));

      // New connections are refused while the old ones go on.
      for (const f of FAMILIES)
        assert.deepEqual(await lab.tcpConnect(CLI, ADDR[f], ECHO_PORT, BLOCKED_MS), { ok: false, error: 'timeout' }, `new connect ${f}`);

      // ~2 s more of traffic (7 more echoes at 300 ms) on each old connection after the start.
      await Promise.all(
        conns.map((c, i) => c.waitForLine(new RegExp(`^echo ${marks[i]!.last + 7}$`), 20_000, marks[i]!.from)),
      );
      for (const c of conns) {
        assert.ok(c.running, `${c.name} still runs`);
        assert.doesNotMatch(c.output, /^(error|closed|unexpected)/m, c.name);
      }
      const sc = await server.counters();
      assert.ok(counter(sc, 'pass_flow') >= 14, `old connections pass as flows: ${JSON.stringify(sc)}`);
      assert.ok(counter(sc, 'drop_no_option') >= 2, `new SYNs dropped: ${JSON.stringify(sc)}`);
      assert.equal(counter(sc, 'drop_flow_miss'), 0, `no segment of the old connections was dropped: ${JSON.stringify(sc)}`);
    } finally {
      for (const c of conns) await c.stop();
      await server?.stop();
      await lab.serverStop(SRV);
      for (const e of echo) await e.stop();
    }
  });

  it('f: after SIGTERM protection stays in force; `spak server stop eth0` removes it and the service answers without a client', { timeout: 90_000 }, async () => {
    const server = await startSpak(lab, SRV, 'server', { config: serverConfig() });
    try {
      try {
        assert.equal(await hasServerHook(lab, SRV), true, 'the server hook (XDP, or tcx at TC ingress) attached while running');
        assert.deepEqual(await lab.tcpConnect(CLI, ADDR.v4, PORT, BLOCKED_MS), { ok: false, error: 'timeout' }, 'protected while running');
      } finally {
        const { counters, output } = await server.stop();
        assert.equal(server.proc.exitCode, 0, output);
        assert.ok(counters !== null, `final counters printed: ${output}`);
        assert.match(output, /SIGTERM: exiting; protection stays in force on eth0/);
      }
      // The daemon is gone, the protection is not.
      assert.equal(await hasServerHook(lab, SRV), true, 'the server hook still on eth0 after SIGTERM');
      for (const f of FAMILIES)
        assert.deepEqual(await lab.tcpConnect(OTH, ADDR[f], PORT, BLOCKED_MS), { ok: false, error: 'timeout' }, `keyless ${f} after SIGTERM`);

      const stop = await lab.serverStop(SRV);
      assert.equal(stop.code, 0, `spak server stop eth0: ${stop.stderr}${stop.stdout}`);
      assert.match(stop.stdout, /\S/, 'it says what it removed');
      assert.equal(await hasServerHook(lab, SRV), false, 'nothing of the server left on eth0 (XDP or tcx)');
      for (const host of [CLI, OTH])
        for (const f of FAMILIES) {
          const r = await lab.httpGet(host, ADDR[f], PORT);
          assert.ok(r.ok, `${host} -> ${ADDR[f]} after stop: ${r.error}`);
          assert.equal(r.body, PAGE);
        }
      // Nothing of spak's left: a second stop says so.
      const again = await lab.serverStop(SRV);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout + again.stderr, /nothing of spak's on eth0/);
    } finally {
      await lab.cleanupSpak(SRV);
    }
  });
});
