// spak-test-timeout: 900
// spak-test-modes: xdp tc
// Stealth (issue 7 §1) end to end: a keyless host scans the server with nmap over a range holding
// one protected port, one open unprotected port and closed ports, TCP (SYN scan) and UDP, v4 and
// v6. Without stealth the protected port is the one silent ("filtered") port among "closed" ones;
// with it every closed port looks exactly like the protected one, and the open port is still open.
// The server's own outgoing TCP connections and UDP exchanges keep working with stealth on.
// Hosts: server .1/::1, keyless scanner .3/::3. Nothing here asserts a timing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startSpak, type Lab } from '../../src/lab/lab.js';
import { ADDR, delta, FAMILIES, KEY, KEY_ID, OTH, skip, SRV, type Family } from './common.js';
import { stealthLab } from './stealth-lab.js';

const PROTECTED = 8080;
const OPEN = 8081;
const CLOSED = [8082, 8083, 8084, 8085];
const TCP_RANGE = `${PROTECTED}-${CLOSED[CLOSED.length - 1]}`;
const UDP_PROTECTED = 5300;
const UDP_OPEN = 5301;
const UDP_CLOSED = [5302, 5303, 5304];
const UDP_RANGE = `${UDP_PROTECTED}-${UDP_CLOSED[UDP_CLOSED.length - 1]}`;
/** A service on the scanner the server connects out to (TCP) and exchanges datagrams with (UDP). */
const OUT_TCP = 7070;
const OUT_UDP = 7071;

/** One datagram to addr:port, waits for an answer: {ok} or {ok:false,error:'timeout'}. */
const UDP_ASK = `
const [addr, port] = process.argv.slice(1);
const s = require('dgram').createSocket(addr.includes(':') ? 'udp6' : 'udp4');
const done = (r) => { console.log(JSON.stringify(r)); process.exit(0); };
setTimeout(() => done({ ok: false, error: 'timeout' }), 2000);
s.on('message', (m) => done({ ok: m.toString() === 'pong' }));
s.send(Buffer.from('ping'), Number(port), addr);
`;

type States = Record<number, string>;

function config(stealth: { stealth?: boolean; stealthUdp?: boolean }) {
  return {
    keys: [{ id: KEY_ID, secret: KEY }],
    protect: FAMILIES.flatMap((f) => [
      { address: ADDR[f], port: PROTECTED },
      { address: ADDR[f], port: UDP_PROTECTED, protocol: 'udp' },
    ]),
    ...stealth,
  };
}

describe('stealth: a scan does not single out the protected port', { skip }, () => {
  let lab: Lab;

  before(async () => {
    lab = await stealthLab('stealth', {
      protected: PROTECTED, open: OPEN, outTcp: OUT_TCP, udp: [[SRV, UDP_PROTECTED], [SRV, UDP_OPEN], [OTH, OUT_UDP]],
    });
  });

  after(async () => {
    await lab?.destroy();
  });

  /** nmap from the scanner: the state of each port it reports. */
  async function scan(f: Family, proto: 'tcp' | 'udp'): Promise<{ states: States; out: string }> {
    const argv = ['nmap', '-n', '-Pn', proto === 'tcp' ? '-sS' : '-sU', '-T4', '--max-retries', proto === 'tcp' ? '1' : '2',
      '--host-timeout', '120s', '--reason', '-p', proto === 'tcp' ? TCP_RANGE : UDP_RANGE];
    if (f === 'v6') argv.push('-6');
    const r = await lab.exec(OTH, [...argv, ADDR[f]], { timeoutMs: 180_000 });
    assert.equal(r.code, 0, `nmap ran: ${r.stderr}`);
    const states: States = {};
    for (const m of r.stdout.matchAll(new RegExp(`^(\\d+)/${proto}\\s+(\\S+)`, 'gm'))) states[Number(m[1])] = m[2]!;
    return { states, out: r.stdout };
  }

  /** The state nmap reports for a port (it lists every port of so small a range). */
  function stateOf(s: { states: States; out: string }, port: number): string {
    return s.states[port] ?? 'unreported';
  }

  async function udpAsk(host: string, addr: string, port: number): Promise<{ ok: boolean; error?: string }> {
    const r = await lab.exec(host, [process.execPath, '-e', UDP_ASK, addr, String(port)], { timeoutMs: 15_000 });
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; error?: string };
  }

  it('without stealth: the closed TCP and UDP ports answer, the protected ones alone are silent (v4, v6)', { timeout: 400_000 }, async () => {
    const server = await startSpak(lab, SRV, 'server', { config: config({}) });
    try {
      const before = await server.counters();
      for (const f of FAMILIES) {
        const t = await scan(f, 'tcp');
        assert.equal(stateOf(t, PROTECTED), 'filtered', `${f}: protected port\n${t.out}`);
        assert.equal(stateOf(t, OPEN), 'open', `${f}: open port\n${t.out}`);
        for (const p of CLOSED) assert.equal(stateOf(t, p), 'closed', `${f}: closed port ${p}\n${t.out}`);
        const u = await scan(f, 'udp');
        assert.equal(stateOf(u, UDP_PROTECTED), 'open|filtered', `${f}: protected UDP port\n${u.out}`);
        assert.equal(stateOf(u, UDP_OPEN), 'open', `${f}: open UDP port\n${u.out}`);
        for (const p of UDP_CLOSED) assert.equal(stateOf(u, p), 'closed', `${f}: closed UDP port ${p}\n${u.out}`);
      }
      const after = await server.counters();
      assert.equal(delta(before, after, 'drop_stealth_syn'), 0);
      assert.equal(delta(before, after, 'drop_stealth_udp'), 0);
    } finally {
      await server.stop().catch(() => undefined);
      await lab.cleanupSpak(SRV);
    }
  });

  it('with --stealth and stealthUdp: every closed port looks like the protected one, the open port is open (v4, v6)', { timeout: 400_000 }, async () => {
    // stealthUdp from the config file, --stealth from the command line: both ways in.
    const server = await startSpak(lab, SRV, 'server', { config: config({ stealthUdp: true }) }, ['--stealth']);
    try {
      const before = await server.counters();
      for (const f of FAMILIES) {
        const t = await scan(f, 'tcp');
        assert.equal(stateOf(t, OPEN), 'open', `${f}: open port\n${t.out}`);
        for (const p of [PROTECTED, ...CLOSED]) assert.equal(stateOf(t, p), 'filtered', `${f}: port ${p}\n${t.out}`);
        const u = await scan(f, 'udp');
        assert.equal(stateOf(u, UDP_OPEN), 'open', `${f}: open UDP port\n${u.out}`);
        for (const p of [UDP_PROTECTED, ...UDP_CLOSED]) assert.equal(stateOf(u, p), 'open|filtered', `${f}: UDP port ${p}\n${u.out}`);
      }
      const after = await server.counters();
      // At least one probe per closed port and family (nmap retries some).
      assert.ok(delta(before, after, 'drop_stealth_syn') >= CLOSED.length * 2, JSON.stringify(after));
      assert.ok(delta(before, after, 'drop_stealth_udp') >= UDP_CLOSED.length * 2, JSON.stringify(after));
      // The server's own outgoing connections and datagrams get their answers.
      for (const f of FAMILIES) {
        const r = await lab.httpGet(SRV, lab.host(OTH)[f], OUT_TCP);
        assert.ok(r.ok && r.body === 'outside\n', `${f}: the server's own TCP connection out: ${r.error}`);
        assert.deepEqual(await udpAsk(SRV, lab.host(OTH)[f], OUT_UDP), { ok: true }, `${f}: the server's own UDP exchange`);
      }
      // The open unprotected service still serves the scanner.
      for (const f of FAMILIES) {
        const r = await lab.httpGet(OTH, ADDR[f], OPEN);
        assert.ok(r.ok && r.body === 'open\n', `${f}: the open port serves: ${r.error}`);
      }
    } finally {
      await server.stop().catch(() => undefined);
      await lab.cleanupSpak(SRV);
    }
  });
});
