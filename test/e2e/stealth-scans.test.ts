// spak-test-timeout: 600
// spak-test-modes: xdp tc
// Stealth (issue 12, Low) end to end: with --stealth and --stealth-udp, a protected port and a
// closed port of the server must get the same state from every nmap scan type, not only the SYN
// scan: -sS, -sA, -sF, -sN, -sX, -sW, -sM (TCP) and -sU (UDP), IPv4 and IPv6, from a keyless host.
// An ACK, FIN, NULL, Xmas, window or Maimon probe to a closed port draws a RST from the kernel,
// while the protected port drops every segment without a flow: that difference is what the file
// looks for. An open unprotected port is scanned alongside and only reported (a stray ACK to a
// listener draws a RST from the kernel: that is normal TCP, not a closed port). The server's own
// outgoing TCP connection still gets its answers afterwards. Nothing here asserts a timing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startSpak, type Lab } from '../../src/lab/lab.js';
import { ADDR, delta, FAMILIES, KEY, KEY_ID, OTH, skip, SRV, type Family } from './common.js';
import { stealthLab } from './stealth-lab.js';

const PROTECTED = 8180;
const CLOSED = 8182;
const OPEN = 8181;
const UDP_PROTECTED = 5400;
const UDP_CLOSED = 5402;
/** A service on the scanner the server connects out to, after the scans. */
const OUT_TCP = 7170;

const TCP_SCANS = ['-sS', '-sA', '-sF', '-sN', '-sX', '-sW', '-sM'] as const;
type Scan = (typeof TCP_SCANS)[number] | '-sU';

function config() {
  return {
    keys: [{ id: KEY_ID, secret: KEY }],
    protect: FAMILIES.flatMap((f) => [
      { address: ADDR[f], port: PROTECTED },
      { address: ADDR[f], port: UDP_PROTECTED, protocol: 'udp' },
    ]),
    stealthUdp: true,
  };
}

/** Port -> state from nmap's grepable output ("8180/filtered/tcp//..."). */
function grepableStates(out: string): Record<number, string> {
  const states: Record<number, string> = {};
  for (const m of out.matchAll(/(\d+)\/([a-z|]+)\/(?:tcp|udp)\//g)) states[Number(m[1])] = m[2]!;
  return states;
}

describe('stealth: every nmap scan type sees the protected port as it sees a closed one', { skip }, () => {
  let lab: Lab;

  before(async () => {
    lab = await stealthLab('stscan', { protected: PROTECTED, open: OPEN, outTcp: OUT_TCP, udp: [[SRV, UDP_PROTECTED]] });
  });

  after(async () => {
    await lab?.destroy();
  });

  /** One nmap scan from the keyless host: the state of each port, and the output for messages. */
  async function scan(f: Family, type: Scan): Promise<{ states: Record<number, string>; out: string }> {
    const ports = type === '-sU' ? `${UDP_PROTECTED},${UDP_CLOSED}` : `${PROTECTED},${OPEN},${CLOSED}`;
    const argv = ['nmap', '-n', '-Pn', type, '-T4', '--max-retries', '1', '--host-timeout', '60s',
      '--reason', '-p', ports, '-oG', '-'];
    if (f === 'v6') argv.push('-6');
    const r = await lab.exec(OTH, [...argv, ADDR[f]], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `nmap ${type} ran: ${r.stderr}`);
    return { states: grepableStates(r.stdout), out: r.stdout };
  }

  it('--stealth --stealth-udp: protected and closed ports alike for -sS -sA -sF -sN -sX -sW -sM -sU (v4, v6)', { timeout: 500_000 }, async () => {
    const server = await startSpak(lab, SRV, 'server', { config: config() }, ['--stealth']);
    try {
      const before = await server.counters();
      const seen: string[] = [];
      const differ: string[] = [];
      for (const f of FAMILIES) {
        for (const type of [...TCP_SCANS, '-sU'] as Scan[]) {
          const s = await scan(f, type);
          const [prot, closed] = type === '-sU' ? [UDP_PROTECTED, UDP_CLOSED] : [PROTECTED, CLOSED];
          const a = s.states[prot] ?? 'unreported';
          const b = s.states[closed] ?? 'unreported';
          const open = type === '-sU' ? '' : ` open-unprotected=${s.states[OPEN] ?? 'unreported'}`;
          seen.push(`${f} ${type}: protected=${a} closed=${b}${open}`);
          if (a !== b || a === 'unreported') differ.push(`${f} ${type}: protected=${a} closed=${b}\n${s.out}`);
        }
      }
      console.log(seen.join('\n'));
      assert.deepEqual(differ, [], `scan types that single out the protected port:\n${differ.join('\n')}`);
      const after = await server.counters();
      assert.ok(delta(before, after, 'drop_stealth_syn') >= 2, JSON.stringify(after));
      assert.ok(delta(before, after, 'drop_stealth_udp') >= 2, JSON.stringify(after));
      // Six scan types of segments that are not SYNs, one closed port, two families.
      assert.ok(delta(before, after, 'drop_stealth_segment') >= 12, JSON.stringify(after));
      // The server's own connection out, and the open unprotected port, still work with stealth on.
      for (const f of FAMILIES) {
        const out = await lab.httpGet(SRV, lab.host(OTH)[f], OUT_TCP);
        assert.ok(out.ok && out.body === 'outside\n', `${f}: the server's own TCP connection out: ${out.error}`);
        const open = await lab.httpGet(OTH, ADDR[f], OPEN);
        assert.ok(open.ok && open.body === 'open\n', `${f}: the open port serves: ${open.error}`);
      }
    } finally {
      await server.stop().catch(() => undefined);
      await lab.cleanupSpak(SRV);
    }
  });
});
