// spak command line: server, client, keygen, stats. Errors are one line and a non-zero exit.
import { Command, CommanderError, Option } from 'commander';
import type { Logger } from 'pino';
import { BpfMap } from '../bpf/libbpf.js';
import { formatCounters, readCounters } from '../bpf/counters.js';
import { newHexKey } from '../config/keys.js';
import { resolveSecret, type ClientConfig, type ServerConfig } from '../config/schema.js';
import { configFromArgs, numberArg, schemaDefault, wholeNumber, type ArgText } from '../config/args.js';
import { configPath, loadConfig, secretKeyFromEnv, type ConfigPath } from '../config/load.js';
import { SpakClient, type ClientOptions } from '../client/client.js';
import { SpakServer } from '../server/server.js';
import { planFromServerConfig, SpakDaemon, type DaemonOverrides, type DaemonPlan } from '../daemon/daemon.js';
import { currentPinPaths, DEFAULT_BPFFS } from '../bpf/pins.js';
import type { XdpMode } from '../bpf/libbpf.js';
import { SERVER_REASON_NAMES } from '../wire/reasons.js';
import { registerKnock } from './knock.js';
import { UsageError } from './usage.js';
import { runForeground } from '../daemon/foreground.js';
import { registerDoctor } from './doctor.js';
import { registerStatus } from './status.js';
import { registerBpffs } from './bpffs.js';
import { serverReload } from './reload.js';
import { createLogger, plain } from '../observe/log.js';
import { metricsArg, observeSettings } from '../observe/setup.js';
import { hostPort } from '../wire/address.js';

/** The positional form as given: <ip> <port> <key_id> <iface>. */
interface Positionals {
  ip: string;
  port: string;
  keyId: string;
  iface: string;
}

/** Where in the config each positional value lands, with its name for errors (bad port "ssh": ...). */
function positionalTexts(pos: Positionals, dest: string, keyIdPath: string, ifacePath: string): Map<string, ArgText> {
  return new Map<string, ArgText>([
    [`${dest}.address`, { what: 'address', text: pos.ip }],
    [`${dest}.port`, { what: 'port', text: pos.port }],
    [keyIdPath, { what: 'key_id', text: pos.keyId }],
    [ifacePath, { what: 'iface', text: pos.iface }],
  ]);
}

function parsePositionals(args: (string | undefined)[], config: string | undefined, role: string): Positionals | null {
  const given = args.filter((a) => a !== undefined);
  if (config !== undefined) {
    if (given.length > 0) throw new UsageError(`give either <ip> <port> <key_id> <iface> or --config, not both`);
    return null;
  }
  // Nothing given: the configuration file ($SPAK_CONFIG or /etc/spak/spak.json).
  if (given.length === 0) return null;
  if (given.length !== 4)
    throw new UsageError(`spak ${role} needs <ip> <port> <key_id> <iface>, or --config <file>, or nothing (then $SPAK_CONFIG or /etc/spak/spak.json); see spak ${role} --help`);
  const [ip, port, keyId, iface] = given as [string, string, string, string];
  return { ip, port, keyId, iface };
}

/** Number flags of `spak server` and the server fields they set (ranges and defaults: the schema's). */
const SERVER_NUMBER_FLAGS = [
  ['stepSeconds', 'stepSeconds', 'step seconds'],
  ['stepWindow', 'stepWindow', 'step window'],
  ['flowIdle', 'flowIdleSeconds', 'flow idle seconds'],
  ['replayCapacity', 'replayCapacity', 'replay capacity'],
  ['flowCapacity', 'flowCapacity', 'flow capacity'],
] as const;

function secretFromEnv(): Buffer {
  try {
    return secretKeyFromEnv();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function requireRoot(role: string): void {
  if (typeof process.geteuid === 'function' && process.geteuid() !== 0)
    throw new Error(`spak ${role} must run as root: it loads and attaches eBPF programs`);
}

function makeLogger(level: string): Logger {
  return createLogger({ level });
}

/** Options given on the command line win over the config file; defaults do not. */
function fromCli(cmd: Command, name: string): boolean {
  return cmd.getOptionValueSource(name) === 'cli';
}

/**
 * What `spak server` runs. The positional form becomes a server section validated by the same
 * schema as a file (its defaults and ranges); --config is read here once, and again by the
 * daemon on SIGHUP, with the flags given on the command line winning over it.
 */
function serverPlan(
  pos: Positionals | null, o: Record<string, unknown>, cmd: Command,
): { plan: DaemonPlan; overrides: DaemonOverrides; where?: ConfigPath; cfg?: ServerConfig } {
  if (pos) {
    const args = positionalTexts(pos, 'server.protect.0', 'server.keys.0.id', 'server.interface');
    const dest: Record<string, unknown> = { address: pos.ip, port: wholeNumber(pos.port), bindSource: o.bindSource === true };
    if (o.dialAddress !== undefined) {
      dest.dialAddress = o.dialAddress;
      args.set('server.protect.0.dialAddress', { what: 'dial address', text: String(o.dialAddress) });
    }
    if (o.dialPort !== undefined) {
      dest.dialPort = wholeNumber(String(o.dialPort));
      args.set('server.protect.0.dialPort', { what: 'dial port', text: String(o.dialPort) });
    }
    const server: Record<string, unknown> = {
      interface: pos.iface,
      keys: [{ id: wholeNumber(pos.keyId) }],
      protect: [dest],
      seedExisting: o.seed !== false,
      stealth: o.stealth === true,
      stealthUdp: o.stealthUdp === true,
    };
    if (o.xdpMode !== undefined) server.xdpMode = o.xdpMode;
    if (o.enforcement !== undefined) server.enforcement = o.enforcement;
    for (const [flag, key, what] of SERVER_NUMBER_FLAGS)
      if (o[flag] !== undefined) {
        server[key] = wholeNumber(String(o[flag]));
        args.set(`server.${key}`, { what, text: String(o[flag]) });
      }
    const cfg = usageErrors(() => configFromArgs({ server }, args)).server!;
    // The key of the positional form comes from $SECRET_KEY (or $SECRET_KEY_FILE).
    cfg.keys[0]!.secret = secretFromEnv().toString('hex');
    const plan = usageErrors(() => planFromServerConfig(cfg, 'the command line', { allAddresses: o.allAddresses === true }));
    return { plan, overrides: {} };
  }
  const where = configPath(o.config as string | undefined);
  for (const flag of ['dialAddress', 'dialPort', 'bindSource'])
    if (fromCli(cmd, flag)) throw new UsageError(`--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} goes with the positional form; in --config set it per destination`);
  const numbers: Partial<Record<(typeof SERVER_NUMBER_FLAGS)[number][1], number>> = {};
  for (const [flag, key, what] of SERVER_NUMBER_FLAGS)
    if (o[flag] !== undefined) numbers[key] = usageErrors(() => numberArg('server', key, { what, text: String(o[flag]) }));
  const overrides: DaemonOverrides = {
    xdpMode: o.xdpMode as XdpMode | undefined,
    enforcement: o.enforcement as 'xdp' | 'tc' | undefined,
    ...numbers,
    allAddresses: o.allAddresses === true,
    seed: o.seed !== false,
    stealth: o.stealth === true ? true : undefined,
    stealthUdp: o.stealthUdp === true ? true : undefined,
  };
  // Read once for this start: the plan and the observability settings come from the same reading.
  const cfg = loadConfig(where).server;
  if (!cfg) throw new UsageError(`${where.file}: no "server" section`);
  return { plan: planFromServerConfig(cfg, where.file, overrides), overrides, where, cfg };
}

/** Runs fn; what it throws becomes a usage error (exit 2). */
function usageErrors<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function clientOptions(pos: Positionals | null, o: Record<string, unknown>, logger: Logger): ClientOptions {
  let cfg: ClientConfig;
  let file: string;
  if (pos) {
    const args = positionalTexts(pos, 'client.destinations.0', 'client.destinations.0.keyId', 'client.interface');
    const client: Record<string, unknown> = {
      interface: pos.iface,
      destinations: [{ address: pos.ip, port: wholeNumber(pos.port), keyId: wholeNumber(pos.keyId), bindSource: o.bindSource === true }],
    };
    if (o.stepSeconds !== undefined) {
      client.stepSeconds = wholeNumber(String(o.stepSeconds));
      args.set('client.stepSeconds', { what: 'step seconds', text: String(o.stepSeconds) });
    }
    cfg = usageErrors(() => configFromArgs({ client }, args)).client!;
    cfg.destinations[0]!.secret = secretFromEnv().toString('hex');
    file = 'the command line';
  } else {
    const where = configPath(o.config as string | undefined);
    file = where.file;
    const read = loadConfig(where).client;
    if (!read) throw new UsageError(`${file}: no "client" section`);
    cfg = read;
  }
  return {
    iface: cfg.interface,
    targets: cfg.destinations.map((d, i) => ({
      address: d.address,
      port: d.port,
      keyId: d.keyId,
      key: resolveSecret(d, `${file}: client.destinations[${i}]`),
      bindSource: d.bindSource,
    })),
    stepSeconds: cfg.stepSeconds,
    logger,
  };
}

export function buildProgram(): Command {
  const program = new Command('spak')
    .description('Single Packet Authentication with eBPF: a SipHash tag in the TCP SYN, verified at XDP')
    .configureOutput({ outputError: (str, write) => write(str.startsWith('error: ') ? `spak: ${str.slice(7)}` : str) });

  program
    .command('server')
    .description('protect <ip>:<port>: drop every SYN without a valid tag at XDP on <iface> (key in $SECRET_KEY or the file $SECRET_KEY_FILE); with no arguments, the config file $SPAK_CONFIG or /etc/spak/spak.json; `spak server stop <iface>` removes it; `spak server reload [iface]` reloads the running daemon\'s configuration and waits for the outcome')
    .argument('[ip]', 'protected destination address (IPv4 or IPv6; 0.0.0.0 or :: for every address of a family, * for all)')
    .argument('[port]', 'protected TCP port')
    .argument('[key_id]', 'key id clients tag with (0-65535)')
    .argument('[iface]', 'interface to attach the XDP program to')
    .option('-c, --config <file>', 'JSON config: interfaces, destinations, keys, knock, user (see README); SIGHUP reloads it')
    .addOption(new Option('--xdp-mode <mode>', `XDP attach mode (default: ${schemaDefault('server', 'xdpMode')})`).choices(['native', 'generic', 'auto']))
    .addOption(new Option('--enforcement <mode>', `where the server program runs: xdp, or tc (TC ingress) where XDP cannot (default: ${schemaDefault('server', 'enforcement')})`).choices(['xdp', 'tc']))
    .option('--step-seconds <n>', `length of a time step (default: ${schemaDefault('server', 'stepSeconds')})`)
    .option('--step-window <n>', `accept time steps within +-n of ours (default: ${schemaDefault('server', 'stepWindow')})`)
    .option('--flow-idle <seconds>', `forget an idle flow whose socket is gone after this long (default: ${schemaDefault('server', 'flowIdleSeconds')})`)
    .option('--bind-source', 'tags must cover the client\'s source address (not for clients behind NAT)')
    .option('--all-addresses', 'protect the port on every address of both families')
    .option('--replay-capacity <n>', `tags remembered at once (see README: Capacity; default: ${schemaDefault('server', 'replayCapacity')})`)
    .option('--flow-capacity <n>', `connections tracked at once (default: ${schemaDefault('server', 'flowCapacity')})`)
    .option('--dial-address <ip>', 'behind DNAT: the address clients dial')
    .option('--dial-port <port>', 'behind DNAT: the port clients dial')
    .option('--no-seed', 'do not keep connections that exist at first start')
    .option('--stealth', 'drop TCP to closed ports of protected addresses too (no RST to any scan: a scan cannot single out the protected port)')
    .option('--stealth-udp', 'drop UDP datagrams to closed ports of protected addresses too (no ICMP port unreachable)')
    .option('--bpffs <dir>', 'where bpffs is (mounted there if missing)', DEFAULT_BPFFS)
    .option('--stats-interval <seconds>', 'print the counters every n seconds (0: only on SIGUSR1 and exit)', '0')
    .option('--log-level <level>', 'pino log level for events on stderr', 'info')
    .option('--log-file <file>', 'also append JSON log lines to this file')
    .option('--metrics <addr:port|unix:/path|off>', 'Prometheus endpoint (default 127.0.0.1:9862; unix:/PATH: a unix socket, mode 0600)', metricsArg)
    .action(async (ip, port, keyId, iface, o: Record<string, unknown>, cmd: Command) => {
      if (ip === 'stop') return serverStop([port, keyId, iface], o);
      if (ip === 'reload') return serverReload([port, keyId, iface]);
      const pos = parsePositionals([ip, port, keyId, iface], o.config as string | undefined, 'server');
      const { plan, overrides, where, cfg } = serverPlan(pos, o, cmd);
      const obs = observeSettings(o, (n) => fromCli(cmd, n), cfg);
      const logger = createLogger(obs.log);
      requireRoot('server');
      const daemon = await SpakDaemon.start(plan, { logger, bpffs: o.bpffs as string, config: where, overrides, metrics: obs.metrics });
      await daemon.run(Number(o.statsInterval) || 0);
    });

  program
    .command('client')
    .description('tag every SYN to <ip>:<port> leaving <iface> (key in $SECRET_KEY or the file $SECRET_KEY_FILE); with no arguments, the config file $SPAK_CONFIG or /etc/spak/spak.json')
    .argument('[ip]', 'server address (IPv4 or IPv6)')
    .argument('[port]', 'server TCP port')
    .argument('[key_id]', 'key id the server knows the key by')
    .argument('[iface]', 'interface to attach the TC egress program to')
    .option('-c, --config <file>', 'JSON config with many destinations and keys (see README; SPAK_* variables override it)')
    .option('--step-seconds <n>', `length of a time step, must match the server (default: ${schemaDefault('client', 'stepSeconds')})`)
    .option('--bind-source', 'cover the source address in the tag (the server must require it too)')
    .option('--stats-interval <seconds>', 'print the counters every n seconds', '0')
    .option('--log-level <level>', 'pino log level for events on stderr', 'info')
    .action(async (ip, port, keyId, iface, o: Record<string, unknown>) => {
      const pos = parsePositionals([ip, port, keyId, iface], o.config as string | undefined, 'client');
      const logger = makeLogger(String(o.logLevel));
      const opts = clientOptions(pos, o, logger);
      requireRoot('client');
      const client = new SpakClient(opts);
      const info = client.start();
      const dests = opts.targets.map((t) => `${hostPort(t.address, t.port)} (key id ${t.keyId}${t.bindSource ? ', source-bound' : ''})`).join(', ');
      await runForeground({
        stop: () => client.stop(),
        report: () => `spak client counters:\n${formatCounters(client.counters())}`,
        statsInterval: Number(o.statsInterval) || 0,
        farewell: (signal) => `spak client: ${signal}: detached, bye`,
        started: () => {
          plain(1, 'info',
            `spak client: TC egress attached to ${info.ifname} (ifindex ${info.ifindex})${info.replaced ? ', replacing a filter a stopped client left' : ''}; tagging SYNs to ${dests}`,
          );
        },
      });
    });

  program
    .command('keygen')
    .description('print a new random 128-bit key as 32 hex characters')
    .action(() => {
      process.stdout.write(`${newHexKey()}\n`);
    });

  program
    .command('stats')
    .description('print the counters of the spak server on <iface> (running or not: they are pinned)')
    .argument('<iface>', 'the server\'s interface')
    .option('--bpffs <dir>', 'where bpffs is', DEFAULT_BPFFS)
    .option('--json', 'print JSON')
    .action((iface: string, o: { bpffs: string; json?: boolean }) => {
      const file = currentPinPaths(iface, 'server', o.bpffs).map('spak_server_counters');
      let map: BpfMap;
      try {
        map = BpfMap.openPinned(file);
      } catch (err) {
        throw new Error(`no spak server counters pinned for ${iface} (${file}): ${(err as Error).message}`);
      }
      try {
        const counters = readCounters(map, SERVER_REASON_NAMES);
        if (o.json) process.stdout.write(`${JSON.stringify(counters, (_k, v) => (typeof v === 'bigint' ? Number(v) : v))}\n`);
        else process.stdout.write(`${formatCounters(counters, true)}\n`);
      } finally {
        map.close();
      }
    });

  registerKnock(program);
  registerStatus(program);
  registerDoctor(program);
  registerBpffs(program);

  // Usage mistakes exit 2 (commander's own errors included); --help and --version exit 0.
  program.exitOverride();
  for (const c of program.commands) c.exitOverride();
  return program;
}

/** `spak server stop <iface>`: the one explicit way to remove protection. */
function serverStop(rest: (string | undefined)[], o: Record<string, unknown>): void {
  const given = rest.filter((a) => a !== undefined);
  if (given.length !== 1) throw new UsageError('spak server stop needs exactly one <iface>');
  requireRoot('server stop');
  const iface = given[0]!;
  const done = SpakServer.remove(iface, o.bpffs as string);
  if (done.length === 0) process.stdout.write(`spak server stop: nothing of spak's on ${iface}\n`);
  for (const line of done) process.stdout.write(`spak server stop: ${line}\n`);
}

/** Entry point used by bin/spak. */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has printed its message already; help and version are not errors
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    // The last line of a process that gives up: on the journal, at the priority of a fatal error.
    plain(2, 'fatal', `spak: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
  }
}
