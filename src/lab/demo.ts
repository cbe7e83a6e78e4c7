// `make demo`: spak protecting a real HTTP service on a throw-away LAN of network namespaces.
// Exit status 0 only when the unauthenticated attempt failed and the authenticated one succeeded.
// Everything it creates is removed at the end, also on failure and on Ctrl-C.
import { randomBytes } from 'node:crypto';
import { Lab, counter, run, startSpak, type Counters, type SpakProcess } from './lab.js';

const PORT = 8080;
const KEY_ID = 1;
const PAGE = '<!doctype html><title>spak demo</title><h1>Hello from behind spak: your SYN carried a valid tag.</h1>\n';

let step = 0;
function say(text: string): void {
  step++;
  process.stdout.write(`\n[${step}] ${text}\n`);
}
function detail(text: string): void {
  for (const line of text.replace(/\n+$/, '').split('\n')) process.stdout.write(`    ${line}\n`);
}

function showCounters(role: string, c: Counters | null): void {
  const rows = Object.entries(c ?? {}).filter(([, v]) => v !== 0);
  if (rows.length === 0) {
    detail(`${role}: (no packets counted)`);
    return;
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  detail(`${role}:`);
  for (const [k, v] of rows) detail(`  ${k.padEnd(width)}  ${v}`);
}

async function haveCommand(cmd: string): Promise<boolean> {
  const r = await run(['sh', '-c', `command -v ${cmd}`], { timeoutMs: 5_000 }).catch(() => null);
  return r?.code === 0;
}

async function main(): Promise<number> {
  if (typeof process.geteuid === 'function' && process.geteuid() !== 0) {
    process.stderr.write('spak demo: run as root (it makes network namespaces and attaches eBPF programs)\n');
    return 1;
  }
  process.stdout.write('spak demo: Single Packet Authentication with eBPF, on a LAN of network namespaces\n');
  const key = randomBytes(16).toString('hex');
  let unauthFailed = false;
  let authOk = false;

  say('Building the LAN: a bridge and three hosts, each its own network namespace');
  const lab = await Lab.create({ tag: 'demo' });
  let server: SpakProcess | null = null;
  let client: SpakProcess | null = null;
  try {
    const srv = await lab.addHost('server', 1);
    const cli = await lab.addHost('client', 2);
    const att = await lab.addHost('attacker', 3);
    for (const h of [srv, cli, att]) detail(`${h.name.padEnd(8)}  ${h.v4.padEnd(14)} ${h.v6.padEnd(14)} (namespace ${h.ns})`);
    const url = `http://${srv.v4}:${PORT}/`;

    say(`Starting a real HTTP service on the server: python3 -m http.server at ${url}`);
    await lab.startService('server', srv.v4, PORT, 'http', PAGE);
    const open = await lab.httpGet('attacker', srv.v4, PORT);
    detail(`unprotected, the attacker can fetch it: ${open.ok ? 'yes, the page came back' : `no (${open.error})`}`);

    say(`Starting spak server on the server's eth0: XDP, protecting ${srv.v4}:${PORT} with key id ${KEY_ID} (a fresh random key)`);
    detail(`$ SECRET_KEY=<32 hex> spak server ${srv.v4} ${PORT} ${KEY_ID} eth0`);
    server = await startSpak(lab, 'server', 'server', { args: [srv.v4, String(PORT), String(KEY_ID), 'eth0'], secret: key });
    detail(server.banner);

    say(`The attacker, who has no key, tries: curl --max-time 3 ${url}`);
    const unauth = await lab.httpGet('attacker', srv.v4, PORT, 3);
    unauthFailed = !unauth.ok;
    detail(unauth.ok ? `UNEXPECTED: it got through:\n${unauth.body}` : `failed as it should: ${unauth.error}`);
    detail('its SYN carried no tag, so XDP dropped it before the TCP stack saw it: no SYN-ACK, no RST');

    if (await haveCommand('nmap')) {
      say(`The attacker scans the port: nmap -sS -Pn -n -p ${PORT} ${srv.v4}`);
      const scan = await lab.exec('attacker', ['nmap', '-sS', '-Pn', '-n', '-p', String(PORT), '--max-retries', '1', srv.v4], {
        timeoutMs: 60_000,
      });
      const state = new RegExp(`^${PORT}/tcp\\s+(\\S+).*$`, 'm').exec(scan.stdout);
      detail(state ? state[0] : `nmap said:\n${scan.stdout}${scan.stderr}`);
      if (state?.[1] === 'filtered') detail('"filtered": to a scanner the port looks like nothing is there');
    }

    say(`Starting spak client on the client's eth0: TC egress, tagging SYNs to ${srv.v4}:${PORT} with the same key`);
    detail(`$ SECRET_KEY=<32 hex> spak client ${srv.v4} ${PORT} ${KEY_ID} eth0`);
    client = await startSpak(lab, 'client', 'client', { args: [srv.v4, String(PORT), String(KEY_ID), 'eth0'], secret: key });
    detail(client.banner);

    say(`The client fetches the page: curl --max-time 3 ${url}`);
    const auth = await lab.httpGet('client', srv.v4, PORT, 3);
    authOk = auth.ok && auth.body === PAGE;
    detail(auth.ok ? `response:\n${auth.body}` : `UNEXPECTED: it failed: ${auth.error}`);

    say('The attacker tries once more, while the client is authenticated');
    const again = await lab.httpGet('attacker', srv.v4, PORT, 3);
    if (again.ok) unauthFailed = false;
    detail(again.ok ? 'UNEXPECTED: it got through' : `still refused: ${again.error}`);

    say('The server daemon is killed (SIGKILL): its program stays pinned and in force');
    await server.kill('SIGKILL');
    server = null;
    const dead = await lab.httpGet('attacker', srv.v4, PORT, 3);
    if (dead.ok) unauthFailed = false;
    detail(dead.ok ? 'UNEXPECTED: with the daemon dead the attacker got through' : `the attacker is still refused: ${dead.error}`);

    say('A new spak server starts and adopts the pinned program: an atomic swap, no moment unprotected');
    server = await startSpak(lab, 'server', 'server', { args: [srv.v4, String(PORT), String(KEY_ID), 'eth0'], secret: key });
    detail(server.banner);
    const after = await lab.httpGet('client', srv.v4, PORT, 3);
    if (!(after.ok && after.body === PAGE)) authOk = false;
    detail(after.ok ? 'the client is served as before' : `UNEXPECTED: the client failed: ${after.error}`);

    say('Stopping both daemons (SIGTERM): the client detaches; the server leaves protection in force');
    const c = await client.stop();
    client = null;
    const s = await server.stop();
    server = null;
    detail(s.output.trim().split('\n').pop() ?? '');
    showCounters('spak server (pinned counters, kept across the restart)', s.counters);
    showCounters('spak client', c.counters);
    detail(
      `valid tagged SYNs let through: ${counter(s.counters, 'pass_valid_syn')}; ` +
        `SYNs without a tag dropped: ${counter(s.counters, 'drop_no_option')}; ` +
        `SYNs the client tagged: ${counter(c.counters, 'injected')}`,
    );

    say('Removing protection, the one explicit way: spak server stop eth0');
    const stop = await lab.serverStop('server');
    detail(`$ spak server stop eth0\n${stop.stdout.trim()}`);
    const open2 = await lab.httpGet('attacker', srv.v4, PORT, 3);
    detail(open2.ok ? 'the service is open to everyone again' : `UNEXPECTED: still refused: ${open2.error}`);
  } finally {
    say('Tearing the LAN down');
    await client?.stop().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    await lab.destroy();
    detail('namespaces, links and processes removed');
  }

  const ok = unauthFailed && authOk;
  process.stdout.write(
    `\nspak demo: ${ok ? 'PASS' : 'FAIL'}: unauthenticated attempt ${unauthFailed ? 'refused' : 'NOT refused'}, ` +
      `authenticated attempt ${authOk ? 'served' : 'NOT served'}\n`,
  );
  return ok ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`spak demo: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
