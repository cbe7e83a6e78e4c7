// connect() latency over veth with and without spak, as a ratio. Rounds alternate
// without/with so drift on this noisy machine falls on both sides alike.
import { Lab, startSpak } from '../src/lab/lab.js';
import { median } from './median.js';

export interface ConnectResult {
  withoutUs: number;
  withUs: number;
  /** Lowest and highest round medians: how noisy this machine was during the run. */
  withoutRange: [number, number];
  withRange: [number, number];
  ratio: number;
  rounds: number;
  connectsPerRound: number;
}

const KEY = '112233445566778899aabbccddeeff00';
const PORT = 9000;

// Sequential connect()+destroy; prints the median handshake time in µs.
const CONNECT_LOOP = `
const net = require('node:net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const times = [];
function one(i) {
  if (i === n) {
    times.sort((a, b) => a - b);
    console.log(JSON.stringify({ medianUs: times[times.length >> 1] }));
    return;
  }
  const t0 = process.hrtime.bigint();
  const s = net.connect({ host, port });
  s.setTimeout(3000, () => { console.error('connect timeout'); process.exit(1); });
  s.on('error', (e) => { console.error(String(e)); process.exit(1); });
  s.on('connect', () => { times.push(Number(process.hrtime.bigint() - t0) / 1000); s.destroy(); setImmediate(() => one(i + 1)); });
}
one(0);
`;

// Accepts and closes: the handshake is all that is measured.
const ACCEPT_LOOP = `
require('node:net').createServer((s) => s.destroy()).listen(Number(process.argv[2]), process.argv[1], () => console.log('listening'));
`;

export async function benchConnect(connects: number, rounds = 8): Promise<ConnectResult> {
  const lab = await Lab.create({ tag: 'bench' });
  try {
    const server = await lab.addHost('server', 1);
    await lab.addHost('client', 2);
    const listener = lab.spawn('server', [process.execPath, '-e', ACCEPT_LOOP, server.v4, String(PORT)], {}, 'accept loop');
    await listener.waitForLine(/listening/);
    const measure = async (): Promise<number> => {
      const r = await lab.exec('client', [process.execPath, '-e', CONNECT_LOOP, server.v4, String(PORT), String(connects)], {
        timeoutMs: 120_000,
      });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      if (r.code !== 0 || !line.startsWith('{')) throw new Error(`connect loop failed: ${r.stderr.trim() || line}`);
      return (JSON.parse(line) as { medianUs: number }).medianUs;
    };
    await measure(); // warm up caches, ARP and the page cache of node itself
    const without: number[] = [];
    const withSpak: number[] = [];
    for (let r = 0; r < rounds; r++) {
      without.push(await measure());
      const srv = await startSpak(lab, 'server', 'server', { args: [server.v4, String(PORT), '1', 'eth0'], secret: KEY });
      const cli = await startSpak(lab, 'client', 'client', { args: [server.v4, String(PORT), '1', 'eth0'], secret: KEY });
      try {
        withSpak.push(await measure());
      } finally {
        await cli.stop();
        await srv.stop();
      }
    }
    const withoutUs = median(without);
    const withUs = median(withSpak);
    const range = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];
    return {
      withoutUs,
      withUs,
      withoutRange: range(without),
      withRange: range(withSpak),
      ratio: withUs / withoutUs,
      rounds,
      connectsPerRound: connects,
    };
  } finally {
    await lab.destroy();
  }
}
