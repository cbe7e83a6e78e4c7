// spak command line: server, client, keygen, stats. Errors are one line and a non-zero exit.
import { isIP } from 'node:net';
import { Command, CommanderError, Option } from 'commander';
import type { Logger } from 'pino';
import { BpfMap } from '../bpf/libbpf.js';
import { formatCounters, readCounters } from '../bpf/counters.js';
import { newHexKey } from '../config/keys.js';
import { resolveSecret, type ServerConfig } from '../config/schema.js';
import { configPath, loadConfig, secretKeyFromEnv, type ConfigPath } from '../config/load.js';
import { SpakClient, type ClientOptions } from '../client/client.js';
import { SpakServer } from '../server/server.js';
import { ALL_ADDRESSES, type ProtectedDest } from '../server/destinations.js';
import { allAddresses, planFromConfig, SpakDaemon, type DaemonOverrides, type DaemonPlan } from '../daemon/daemon.js';
import { DEFAULT_BPFFS, pinPaths } from '../bpf/pins.js';
import type { XdpMode } from '../bpf/libbpf.js';
import { SERVER_REASON_NAMES } from '../wire/layout.js';
import { registerKnock } from './knock.js';
import { UsageError } from './usage.js';
import { runForeground } from '../daemon/foreground.js';
import { registerDoctor } from './doctor.js';
import { registerStatus } from './status.js';
import { createLogger } from '../observe/log.js';
import { metricsArg, observeSettings } from '../observe/setup.js';
import { hostPort } from '../wire/address.js';

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
  // Nothing given: the configuration file ($SPAK_CONFIG or /etc/spak/spak.json).
  if (given.length === 0) return null;
  if (given.length !== 4)
    throw new UsageError(`spak ${role} needs <ip> <port> <key_id> <iface>, or --config <file>, or nothing (then $SPAK_CONFIG or /etc/spak/spak.json); see spak ${role} --help`);
  const [ip, port, keyId, iface] = given as [string, string, string, string];
  if (isIP(ip) === 0 && !(role === 'server' && ip === ALL_ADDRESSES))
    throw new UsageError(`bad address "${ip}": not an IPv4 or IPv6 address${role === 'server' ? ' (or "*")' : ''}`);
  return { ip, port: parseIntIn(port, 'port', 1, 65535), keyId: parseIntIn(keyId, 'key_id', 0, 65535), iface };
}

function parseIntIn(text: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`bad ${what} "${text}": expected a whole number from ${min} to ${max}`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`bad ${what} ${n}: must be from ${min} to ${max}`);
  return n;
}

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
 * What `spak server` runs. The positional form is read here; --config is read by the daemon
 * (which reads it again on SIGHUP), with the flags given on the command line winning over it.
 */
function serverPlan(
  pos: Positionals | null, o: Record<string, unknown>, cmd: Command,
): { plan: DaemonPlan; overrides: DaemonOverrides; where?: ConfigPath; cfg?: ServerConfig } {
  const int = (name: string, what: string, min: number, max: number) => parseIntIn(String(o[name]), what, min, max);
  if (pos) {
    const dialAddress = o.dialAddress as string | undefined;
    if (dialAddress !== undefined && isIP(dialAddress) === 0) throw new UsageError(`bad --dial-address "${dialAddress}"`);
    let protect: ProtectedDest[] = [
      {
        address: pos.ip,
        port: pos.port,
        bindSource: o.bindSource === true,
        dialAddress,
        dialPort: o.dialPort === undefined ? undefined : parseIntIn(String(o.dialPort), 'dial port', 1, 65535),
      },
    ];
    if (o.allAddresses === true) protect = usageErrors(() => allAddresses(protect));
    const plan: DaemonPlan = {
      interfaces: [{ name: pos.iface, xdpMode: o.xdpMode as XdpMode, enforcement: o.enforcement as 'xdp' | 'tc' }],
      server: {
        keys: [{ id: pos.keyId, key: secretFromEnv() }],
        protect,
        stepSeconds: int('stepSeconds', 'step seconds', 1, 3600),
        stepWindow: int('stepWindow', 'step window', 0, 10),
        flowIdleSeconds: int('flowIdle', 'flow idle seconds', 1, 1e9),
        flowFinSeconds: 30,
        replayCapacity: int('replayCapacity', 'replay capacity', 1024, 16_777_216),
        flowCapacity: int('flowCapacity', 'flow capacity', 1024, 16_777_216),
        seedExisting: o.seed !== false,
        stealth: o.stealth === true,
        stealthUdp: o.stealthUdp === true,
      },
    };
    return { plan, overrides: {} };
  }
  const where = configPath(o.config as string | undefined);
  for (const flag of ['dialAddress', 'dialPort', 'bindSource'])
    if (fromCli(cmd, flag)) throw new UsageError(`--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} goes with the positional form; in --config set it per destination`);
  const overrides: DaemonOverrides = {
    xdpMode: fromCli(cmd, 'xdpMode') ? (o.xdpMode as XdpMode) : undefined,
    enforcement: fromCli(cmd, 'enforcement') ? (o.enforcement as 'xdp' | 'tc') : undefined,
    stepSeconds: fromCli(cmd, 'stepSeconds') ? int('stepSeconds', 'step seconds', 1, 3600) : undefined,
    stepWindow: fromCli(cmd, 'stepWindow') ? int('stepWindow', 'step window', 0, 10) : undefined,
    flowIdleSeconds: fromCli(cmd, 'flowIdle') ? int('flowIdle', 'flow idle seconds', 1, 1e9) : undefined,
    replayCapacity: fromCli(cmd, 'replayCapacity') ? int('replayCapacity', 'replay capacity', 1024, 16_777_216) : undefined,
    flowCapacity: fromCli(cmd, 'flowCapacity') ? int('flowCapacity', 'flow capacity', 1024, 16_777_216) : undefined,
    allAddresses: o.allAddresses === true,
    seed: o.seed !== false,
    stealth: o.stealth === true ? true : undefined,
    stealthUdp: o.stealthUdp === true ? true : undefined,
  };
  const cfg = loadConfig(where).server;
  if (!cfg) throw new UsageError(`${where.file}: no "server" section`);
  return { plan: planFromConfig(where, overrides), overrides, where, cfg };
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
  if (pos)
    return {
      iface: pos.iface,
      targets: [{ address: pos.ip, port: pos.port, keyId: pos.keyId, key: secretFromEnv(), bindSource: o.bindSource === true }],
      stepSeconds: parseIntIn(String(o.stepSeconds), 'step seconds', 1, 3600),
      logger,
    };
  const where = configPath(o.config as string | undefined);
  const file = where.file;
  const cfg = loadConfig(where).client;
  if (!cfg) throw new UsageError(`${file}: no "client" section`);
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
    .description('protect <ip>:<port>: drop every SYN without a valid tag at XDP on <iface> (key in $SECRET_KEY or the file $SECRET_KEY_FILE); with no arguments, the config file $SPAK_CONFIG or /etc/spak/spak.json; `spak server stop <iface>` removes it')
    .argument('[ip]', 'protected destination address (IPv4 or IPv6; 0.0.0.0 or :: for every address of a family, * for all)')
    .argument('[port]', 'protected TCP port')
    .argument('[key_id]', 'key id clients tag with (0-65535)')
    .argument('[iface]', 'interface to attach the XDP program to')
    .option('-c, --config <file>', 'JSON config: interfaces, destinations, keys, knock, user (see README); SIGHUP reloads it')
    .addOption(new Option('--xdp-mode <mode>', 'XDP attach mode').choices(['native', 'generic', 'auto']).default('native'))
    .addOption(new Option('--enforcement <mode>', 'where the server program runs: xdp, or tc (TC ingress) where XDP cannot').choices(['xdp', 'tc']).default('xdp'))
    .option('--step-seconds <n>', 'length of a time step', '30')
    .option('--step-window <n>', 'accept time steps within +-n of ours', '1')
    .option('--flow-idle <seconds>', 'forget an idle flow whose socket is gone after this long', '3600')
    .option('--bind-source', 'tags must cover the client\'s source address (not for clients behind NAT)')
    .option('--all-addresses', 'protect the port on every address of both families')
    .option('--replay-capacity <n>', 'tags remembered at once (see README: Capacity)', '131072')
    .option('--flow-capacity <n>', 'connections tracked at once', '131072')
    .option('--dial-address <ip>', 'behind DNAT: the address clients dial')
    .option('--dial-port <port>', 'behind DNAT: the port clients dial')
    .option('--no-seed', 'do not keep connections that exist at first start')
    .option('--stealth', 'drop SYNs to closed ports of protected addresses too (no RST: a scan cannot single out the protected port)')
    .option('--stealth-udp', 'drop UDP datagrams to closed ports of protected addresses too (no ICMP port unreachable)')
    .option('--bpffs <dir>', 'where bpffs is (mounted there if missing)', DEFAULT_BPFFS)
    .option('--stats-interval <seconds>', 'print the counters every n seconds (0: only on SIGUSR1 and exit)', '0')
    .option('--log-level <level>', 'pino log level for events on stderr', 'info')
    .option('--log-file <file>', 'also append JSON log lines to this file')
    .option('--metrics <addr:port|off>', 'Prometheus endpoint (default 127.0.0.1:9862)', metricsArg)
    .action(async (ip, port, keyId, iface, o: Record<string, unknown>, cmd: Command) => {
      if (ip === 'stop') return serverStop([port, keyId, iface], o);
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
    .option('--step-seconds <n>', 'length of a time step (must match the server)', '30')
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
          process.stdout.write(
            `spak client: TC egress attached to ${info.ifname} (ifindex ${info.ifindex})${info.replaced ? ', replacing a filter a stopped client left' : ''}; tagging SYNs to ${dests}\n`,
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
      const file = pinPaths(iface, 'server', o.bpffs).map('spak_server_counters');
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
    process.stderr.write(`spak: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
  }
}
