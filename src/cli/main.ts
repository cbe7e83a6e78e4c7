// spak command line: server, client, keygen, stats. Errors are one line and a non-zero exit.
import { isIP } from 'node:net';
import { Command, Option } from 'commander';
import { pino, type Logger } from 'pino';
import { BpfMap } from '../bpf/libbpf.js';
import { formatCounters, readCounters } from '../bpf/counters.js';
import { newHexKey, parseHexKey } from '../config/keys.js';
import { loadConfigFile, resolveSecret } from '../config/schema.js';
import { SpakClient, type ClientOptions } from '../client/client.js';
import { SpakServer, type ServerOptions } from '../server/server.js';
import { SERVER_REASON_NAMES } from '../wire/layout.js';

/** A mistake in what the user typed: reported as one line, exit status 2. */
export class UsageError extends Error {}

interface Positionals {
  ip: string;
  port: number;
  keyId: number;
  iface: string;
}

function parsePositionals(args: (string | undefined)[], config: string | undefined, role: string): Positionals | null {
  const given = args.filter((a) => a !== undefined);
  if (config !== undefined) {
    if (given.length > 0) throw new UsageError(`give either <ip> <port> <key_id> <iface> or --config, not both`);
    return null;
  }
  if (given.length !== 4)
    throw new UsageError(`spak ${role} needs <ip> <port> <key_id> <iface> (or --config <file>); see spak ${role} --help`);
  const [ip, port, keyId, iface] = given as [string, string, string, string];
  if (isIP(ip) === 0) throw new UsageError(`bad address "${ip}": not an IPv4 or IPv6 address`);
  return { ip, port: parseIntIn(port, 'port', 1, 65535), keyId: parseIntIn(keyId, 'key_id', 0, 65535), iface };
}

function parseIntIn(text: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`bad ${what} "${text}": expected a whole number from ${min} to ${max}`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`bad ${what} ${n}: must be from ${min} to ${max}`);
  return n;
}

function secretFromEnv(): Buffer {
  const hex = process.env.SECRET_KEY;
  if (hex === undefined || hex === '') throw new UsageError('SECRET_KEY is not set: export SECRET_KEY=<32 hex characters> (spak keygen makes one)');
  try {
    return parseHexKey(hex, 'SECRET_KEY');
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function requireRoot(role: string): void {
  if (typeof process.geteuid === 'function' && process.geteuid() !== 0)
    throw new Error(`spak ${role} must run as root: it loads and attaches eBPF programs`);
}

function makeLogger(level: string): Logger {
  return pino({ name: 'spak', level }, pino.destination(2));
}

/** Runs until SIGINT/SIGTERM; SIGUSR1 prints the counters. */
function runForeground(stop: () => void, report: () => string, statsInterval: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = statsInterval > 0 ? setInterval(() => process.stdout.write(`${report()}\n`), statsInterval * 1000) : null;
    // Signal handlers alone do not keep Node running: this does, until we are told to stop.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    const finish = (signal: string) => {
      clearInterval(keepAlive);
      if (timer) clearInterval(timer);
      for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'] as const) process.removeAllListeners(s);
      let summary = '';
      try {
        summary = report();
      } catch {
        // maps already gone
      }
      stop();
      process.stdout.write(`${summary}\nspak: ${signal}: detached, bye\n`);
      resolve();
    };
    process.on('SIGINT', () => finish('SIGINT'));
    process.on('SIGTERM', () => finish('SIGTERM'));
    process.on('SIGHUP', () => finish('SIGHUP'));
    process.on('SIGUSR1', () => process.stdout.write(`${report()}\n`));
  });
}

function serverOptions(pos: Positionals | null, o: Record<string, unknown>, logger: Logger): ServerOptions {
  if (pos) {
    const dialAddress = o.dialAddress as string | undefined;
    if (dialAddress !== undefined && isIP(dialAddress) === 0) throw new UsageError(`bad --dial-address "${dialAddress}"`);
    return {
      iface: pos.iface,
      xdpMode: o.xdpMode as ServerOptions['xdpMode'],
      keys: [{ id: pos.keyId, key: secretFromEnv() }],
      protect: [
        {
          address: pos.ip,
          port: pos.port,
          dialAddress,
          dialPort: o.dialPort === undefined ? undefined : parseIntIn(String(o.dialPort), 'dial port', 1, 65535),
        },
      ],
      stepSeconds: parseIntIn(String(o.stepSeconds), 'step seconds', 1, 3600),
      stepWindow: parseIntIn(String(o.stepWindow), 'step window', 0, 10),
      flowIdleSeconds: parseIntIn(String(o.flowIdle), 'flow idle seconds', 1, 1e9),
      flowFinSeconds: 30,
      seedExisting: o.seed !== false,
      pinDir: o.pinDir as string | undefined,
      logger,
    };
  }
  const file = o.config as string;
  const cfg = loadConfigFile(file).server;
  if (!cfg) throw new UsageError(`${file}: no "server" section`);
  return {
    iface: cfg.interface,
    xdpMode: cfg.xdpMode,
    keys: cfg.keys.map((k, i) => ({ id: k.id, key: resolveSecret(k, `${file}: server.keys[${i}]`) })),
    protect: cfg.protect,
    stepSeconds: cfg.stepSeconds,
    stepWindow: cfg.stepWindow,
    flowIdleSeconds: cfg.flowIdleSeconds,
    flowFinSeconds: cfg.flowFinSeconds,
    seedExisting: cfg.seedExisting && o.seed !== false,
    pinDir: o.pinDir as string | undefined,
    logger,
  };
}

function clientOptions(pos: Positionals | null, o: Record<string, unknown>, logger: Logger): ClientOptions {
  if (pos)
    return {
      iface: pos.iface,
      targets: [{ address: pos.ip, port: pos.port, keyId: pos.keyId, key: secretFromEnv() }],
      stepSeconds: parseIntIn(String(o.stepSeconds), 'step seconds', 1, 3600),
      logger,
    };
  const file = o.config as string;
  const cfg = loadConfigFile(file).client;
  if (!cfg) throw new UsageError(`${file}: no "client" section`);
  return {
    iface: cfg.interface,
    targets: cfg.destinations.map((d, i) => ({
      address: d.address,
      port: d.port,
      keyId: d.keyId,
      key: resolveSecret(d, `${file}: client.destinations[${i}]`),
    })),
    stepSeconds: cfg.stepSeconds,
    logger,
  };
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export function buildProgram(): Command {
  const program = new Command('spak')
    .description('Single Packet Authentication with eBPF: a SipHash tag in the TCP SYN, verified at XDP')
    .configureOutput({ outputError: (str, write) => write(str.startsWith('error: ') ? `spak: ${str.slice(7)}` : str) });

  program
    .command('server')
    .description('protect <ip>:<port>: drop every SYN without a valid tag at XDP on <iface> (key in $SECRET_KEY)')
    .argument('[ip]', 'protected destination address (IPv4 or IPv6; 0.0.0.0 or :: for any)')
    .argument('[port]', 'protected TCP port')
    .argument('[key_id]', 'key id clients tag with (0-65535)')
    .argument('[iface]', 'interface to attach the XDP program to')
    .option('-c, --config <file>', 'JSON config with many destinations and keys (see README)')
    .addOption(new Option('--xdp-mode <mode>', 'XDP attach mode').choices(['native', 'generic', 'auto']).default('native'))
    .option('--step-seconds <n>', 'length of a time step', '30')
    .option('--step-window <n>', 'accept time steps within +-n of ours', '1')
    .option('--flow-idle <seconds>', 'forget a flow idle this long', '3600')
    .option('--dial-address <ip>', 'behind DNAT: the address clients dial')
    .option('--dial-port <port>', 'behind DNAT: the port clients dial')
    .option('--no-seed', 'do not keep connections that exist at start')
    .option('--pin-dir <dir>', 'pin the maps under this bpffs directory (for spak stats)')
    .option('--stats-interval <seconds>', 'print the counters every n seconds (0: only on SIGUSR1 and exit)', '0')
    .option('--log-level <level>', 'pino log level for events on stderr', 'info')
    .action(async (ip, port, keyId, iface, o: Record<string, unknown>) => {
      const pos = parsePositionals([ip, port, keyId, iface], o.config as string | undefined, 'server');
      const logger = makeLogger(String(o.logLevel));
      const opts = serverOptions(pos, o, logger);
      requireRoot('server');
      const server = new SpakServer(opts);
      const info = server.start();
      const dests = opts.protect.map((d) => hostPort(d.address, d.port)).join(', ');
      process.stdout.write(
        `spak server: XDP (${info.mode}) attached to ${info.ifname} (ifindex ${info.ifindex}); ` +
          `protecting ${dests}; key ids ${opts.keys.map((k) => k.id).join(',')}; ` +
          `step ${opts.stepSeconds}s +-${opts.stepWindow}; ${info.seededFlows} existing connection(s) kept\n`,
      );
      await runForeground(
        () => server.stop(),
        () => `spak server counters:\n${formatCounters(server.counters())}`,
        Number(o.statsInterval) || 0,
      );
    });

  program
    .command('client')
    .description('tag every SYN to <ip>:<port> leaving <iface> (key in $SECRET_KEY)')
    .argument('[ip]', 'server address (IPv4 or IPv6)')
    .argument('[port]', 'server TCP port')
    .argument('[key_id]', 'key id the server knows the key by')
    .argument('[iface]', 'interface to attach the TC egress program to')
    .option('-c, --config <file>', 'JSON config with many destinations and keys (see README)')
    .option('--step-seconds <n>', 'length of a time step (must match the server)', '30')
    .option('--stats-interval <seconds>', 'print the counters every n seconds', '0')
    .option('--log-level <level>', 'pino log level for events on stderr', 'info')
    .action(async (ip, port, keyId, iface, o: Record<string, unknown>) => {
      const pos = parsePositionals([ip, port, keyId, iface], o.config as string | undefined, 'client');
      const logger = makeLogger(String(o.logLevel));
      const opts = clientOptions(pos, o, logger);
      requireRoot('client');
      const client = new SpakClient(opts);
      const info = client.start();
      const dests = opts.targets.map((t) => `${hostPort(t.address, t.port)} (key id ${t.keyId})`).join(', ');
      process.stdout.write(`spak client: TC egress attached to ${info.ifname} (ifindex ${info.ifindex}); tagging SYNs to ${dests}\n`);
      await runForeground(
        () => client.stop(),
        () => `spak client counters:\n${formatCounters(client.counters())}`,
        Number(o.statsInterval) || 0,
      );
    });

  program
    .command('keygen')
    .description('print a new random 128-bit key as 32 hex characters')
    .action(() => {
      process.stdout.write(`${newHexKey()}\n`);
    });

  program
    .command('stats')
    .description('print the counters of a server or client started with --pin-dir')
    .requiredOption('--pin-dir <dir>', 'the --pin-dir the server was started with')
    .option('--json', 'print JSON')
    .action((o: { pinDir: string; json?: boolean }) => {
      const server = `${o.pinDir}/spak_server_counters`;
      let map: BpfMap;
      try {
        map = BpfMap.openPinned(server);
      } catch (err) {
        throw new Error(`no spak counters pinned at ${server}: ${(err as Error).message}`);
      }
      try {
        const counters = readCounters(map, SERVER_REASON_NAMES);
        if (o.json) process.stdout.write(`${JSON.stringify(counters, (_k, v) => (typeof v === 'bigint' ? Number(v) : v))}\n`);
        else process.stdout.write(`${formatCounters(counters, true)}\n`);
      } finally {
        map.close();
      }
    });

  return program;
}

/** Entry point used by bin/spak. */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    process.stderr.write(`spak: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
  }
}
