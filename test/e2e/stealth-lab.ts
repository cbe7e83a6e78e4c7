// The lab both stealth files scan (stealth.test.ts, stealth-scans.test.ts): a server and a keyless
// scanner, ICMP error rate limits off on the server (each closed-port probe must be answered
// without stealth), HTTP on a protected and an open port of both families, one HTTP service on the
// scanner for the server's own outgoing connections, and UDP receivers answering "pong".
import { Lab } from '../../src/lab/lab.js';
import { ADDR, FAMILIES, OTH, SRV } from './common.js';

/** Answers every datagram (empty ones too, as nmap sends) with "pong". */
export const UDP_PONG = `
const s = require('dgram').createSocket({ type: 'udp6', ipv6Only: false });
s.on('message', (m, r) => s.send(Buffer.from('pong'), r.port, r.address));
s.bind(Number(process.argv[1]), '::', () => console.log('udp pong listening'));
`;

export interface StealthPorts {
  protected: number;
  open: number;
  /** The scanner's own HTTP port (the server connects out to it). */
  outTcp: number;
  /** UDP receivers: [host, port]. */
  udp: readonly (readonly [string, number])[];
}

/** The lab, its services started; the services end with lab.destroy(). */
export async function stealthLab(tag: string, ports: StealthPorts): Promise<Lab> {
  const lab = await Lab.create({ tag });
  try {
    await lab.addHost(SRV, 1);
    await lab.addHost(OTH, 3);
    await lab.exec(SRV, ['sysctl', '-q', '-w', 'net.ipv4.icmp_ratelimit=0', 'net.ipv6.icmp.ratelimit=0'], { check: true });
    for (const f of FAMILIES) {
      await lab.startService(SRV, ADDR[f], ports.protected, 'http', 'protected\n');
      await lab.startService(SRV, ADDR[f], ports.open, 'http', 'open\n');
      await lab.startService(OTH, lab.host(OTH)[f], ports.outTcp, 'http', 'outside\n');
    }
    for (const [host, port] of ports.udp) {
      const p = lab.spawn(host, [process.execPath, '-e', UDP_PONG, String(port)], {}, `udp pong ${host} ${port}`);
      await p.waitForLine(/udp pong listening/, 10_000);
    }
    return lab;
  } catch (err) {
    await lab.destroy();
    throw err;
  }
}
