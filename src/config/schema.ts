// The one configuration file format (JSON), validated with zod. Errors name the field.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseHexKey } from './keys.js';
import { parseCidr } from '../wire/address.js';
import { describeIssue, formatPath } from './hints.js';

const address = z.string().refine((s) => isIP(s) !== 0, { message: 'not an IPv4 or IPv6 address' });
/** A protected address may also be "*": every address of both families. */
const protectedAddress = z.string().refine((s) => s === '*' || isIP(s) !== 0, { message: 'not an IPv4 or IPv6 address, nor "*"' });
const capacity = z.number().int().min(1024).max(16_777_216);
const port = z.number().int().min(1).max(65535);
const keyId = z.number().int().min(0).max(65535);
const hexKey = z.string().regex(/^[0-9a-fA-F]{32}$/, { message: 'must be 32 hex characters (128 bits)' });

/** Keys are given inline (secret) or in a file of their own (secretFile), exactly one. */
const serverKey = z.strictObject({ id: keyId, secret: hexKey.optional(), secretFile: z.string().min(1).optional() });

const protectedDest = z.strictObject({
  address: protectedAddress,
  port,
  /** Tags must cover the client's source address (leave off for clients behind NAT). */
  bindSource: z.boolean().default(false),
  /** Behind DNAT: the address and port clients dial, which their tags are bound to. */
  dialAddress: address.optional(),
  dialPort: port.optional(),
  /** tcp: SYN tags, knock allowlist, always-allow; udp: knock allowlist, always-allow. */
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
});

/** An IPv4 or IPv6 address or CIDR (host bits zero). */
export const cidr = z.string().superRefine((s, ctx) => {
  try {
    parseCidr(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

/** "tcp/22", "udp/51820": what a knock may open. */
export const accessSpec = z.string().regex(/^(tcp|udp)\/([1-9]\d{0,4})$/, { message: 'expected tcp/PORT or udp/PORT' })
  .refine((s) => Number(s.split('/')[1]) <= 65535, { message: 'port above 65535' });
const seconds = z.number().int().min(0).max(366 * 86400);
const duration = z.number().int().min(1).max(366 * 86400);

/** Knock mode: the daemon's side. Policy fields are defaults that a client's NAME.json overrides. */
export const knockSchema = z.strictObject({
  port,
  serverKeyFile: z.string().min(1),
  clientsDir: z.string().min(1),
  /** Where the knock grant record lives (default /var/lib/spak/<interface>; the replay memory is pinned, see README). */
  stateDir: z.string().min(1).optional(),
  /** The address the knock socket binds to (default :: with IPv4 mapped, or 0.0.0.0). */
  listenAddress: address.optional(),
  /** Addresses clients knock at besides the interface's own (e.g. a DNAT front). */
  serverAddresses: z.array(address).default([]),
  defaultDurationSeconds: duration.default(300),
  maxDurationSeconds: duration.default(3600),
  windowSeconds: z.number().int().min(1).max(3600).default(30),
  rate: z.number().positive().max(1e9).optional(),
  burst: z.number().int().min(1).max(1_000_000).optional(),
  allow: z.array(accessSpec).max(64).default([]),
  fromNetworks: z.array(cidr).default([]),
  /** Accept a knock whose packet source differs from the address it names (client behind NAT). */
  nat: z.boolean().default(false),
  /** Live allowlist addresses one client may hold; a knock for one more replaces its oldest. */
  maxAddresses: z.number().int().min(1).max(1024).default(4),
  idleExtensionSeconds: seconds.default(0),
  graceSeconds: seconds.default(0),
}).refine((k) => k.defaultDurationSeconds <= k.maxDurationSeconds, {
  message: 'defaultDurationSeconds is above maxDurationSeconds', path: ['defaultDurationSeconds'],
});

const ifname = z.string().min(1).max(15).regex(/^[\w.@:-]+$/, { message: 'not an interface name (letters, digits, _ . @ : -)' });
const xdpMode = z.enum(['native', 'generic', 'auto']);

/** One interface a daemon serves; xdpMode defaults to the section's. */
const serverInterface = z.strictObject({
  name: ifname,
  xdpMode: xdpMode.optional(),
  /** xdp (default) or tc: TC ingress, for drivers where XDP cannot run. */
  enforcement: z.enum(['xdp', 'tc']).optional(),
});

/** A user or group: a name, or a number. */
const account = z.union([z.string().regex(/^[a-z_][a-z0-9_.-]{0,31}\$?$/i, { message: 'not a user or group name' }), z.number().int().min(0).max(2 ** 32 - 2)]);

export const serverSchema = z.strictObject({
  /** One interface (the older form) ... */
  interface: ifname.optional(),
  /** ... or several, each with its own XDP mode. */
  interfaces: z.array(serverInterface).min(1).max(64).optional(),
  xdpMode: xdpMode.default('native'),
  /** Where the server program runs: XDP, or TC ingress (tcx) where XDP cannot; an interface may say otherwise. */
  enforcement: z.enum(['xdp', 'tc']).default('xdp'),
  /** After attaching, run as this user (and group: default the user's), keeping only the capabilities reload and the sweep need. */
  user: account.optional(),
  group: account.optional(),
  stepSeconds: z.number().int().min(1).max(3600).default(30),
  stepWindow: z.number().int().min(0).max(10).default(1),
  flowIdleSeconds: z.number().int().min(1).default(3600),
  flowFinSeconds: z.number().int().min(1).default(30),
  replayCapacity: capacity.default(131072),
  flowCapacity: capacity.default(131072),
  seedExisting: z.boolean().default(true),
  keys: z.array(serverKey).min(1).max(4, { message: 'at most 4 keys can be valid at once (rotation needs two)' }),
  protect: z.array(protectedDest).min(1),
  /** Sources every protected destination admits, with or without a tag or a knock. */
  alwaysAllow: z.array(cidr).max(16384).default([]),
  allowCapacity: capacity.default(65536),
  knock: knockSchema.optional(),
  /** Drop SYNs to closed ports of protected addresses instead of letting the kernel answer RST. */
  stealth: z.boolean().default(false),
  /** Drop UDP datagrams to closed ports of protected addresses instead of the ICMP port unreachable. */
  stealthUdp: z.boolean().default(false),
  /**
   * Prometheus endpoint (src/observe/metrics.ts); on 127.0.0.1:9862 unless told otherwise. `listen`
   * may be `unix:/PATH`: a unix socket with `mode` (octal, default 0600; group: the service user's).
   */
  metrics: z.strictObject({
    enabled: z.boolean().default(true),
    listen: z.union([address, z.string().regex(/^unix:\/./, 'unix:/PATH')]).default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(9862),
    mode: z.string().regex(/^0?[0-7]{3}$/, 'an octal mode such as 0600 or 0660').default('0600'),
  }).optional(),
  /** Logs (src/observe/log.ts): JSON lines to `file` as well as stderr; `level` unless --log-level is given. */
  log: z.strictObject({
    file: z.string().min(1).optional(),
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  }).optional(),
}).superRefine((s, ctx) => {
  if ((s.interface === undefined) === (s.interfaces === undefined))
    ctx.addIssue({ code: 'custom', path: ['interfaces'], message: 'give exactly one of "interface" (one) or "interfaces" (a list)' });
  const seen = new Set<string>();
  for (const [i, f] of (s.interfaces ?? []).entries()) {
    if (seen.has(f.name)) ctx.addIssue({ code: 'custom', path: ['interfaces', i, 'name'], message: `${f.name} is listed twice` });
    seen.add(f.name);
  }
  if (s.group !== undefined && s.user === undefined) ctx.addIssue({ code: 'custom', path: ['group'], message: 'group goes with user' });
});

const clientDest = z.strictObject({
  address,
  port,
  keyId,
  bindSource: z.boolean().default(false),
  secret: hexKey.optional(),
  secretFile: z.string().min(1).optional(),
});

export const clientSchema = z.strictObject({
  interface: z.string().min(1).max(15),
  stepSeconds: z.number().int().min(1).max(3600).default(30),
  destinations: z.array(clientDest).min(1),
});

export const configSchema = z.strictObject({
  server: serverSchema.optional(),
  client: clientSchema.optional(),
});

export type ServerConfig = z.infer<typeof serverSchema>;
export type KnockConfig = z.infer<typeof knockSchema>;
export type ClientConfig = z.infer<typeof clientSchema>;
export type SpakConfigFile = z.infer<typeof configSchema>;

/**
 * One line naming the first bad field, what is wrong and, for the common mistakes, the fix, e.g.
 * "spak.json: server.protect[0].port: Too big: expected number to be <=65535; a port is 1-65535".
 * `root` (the schema that failed) lets an unknown key be matched against the known ones; `setBy`
 * (dotted path -> variable) names the SPAK_* variable instead of the file when one set the field.
 */
export function formatZodError(file: string, err: z.ZodError, root?: z.ZodType, setBy?: ReadonlyMap<string, string>): string {
  const first = err.issues[0];
  if (!first) return `${file}: invalid configuration`;
  const where = formatPath(first.path);
  const { message, hint } = describeIssue(first, root);
  const what = `${message}${hint ? `; ${hint}` : ''}`;
  const variable = setBy?.get(first.path.join('.'));
  if (variable) return `${variable} (${where}): ${what}`;
  return `${file}: ${where || '(top level)'}: ${what}`;
}

/** Reads a JSON file; throws one-line errors. */
export function readConfigJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read config ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not valid JSON: ${(err as Error).message}`);
  }
}

/** Validates a parsed configuration; `file` and `setBy` name where a bad value came from. */
export function validateConfig(json: unknown, file: string, setBy?: ReadonlyMap<string, string>): SpakConfigFile {
  const parsed = configSchema.safeParse(json);
  if (!parsed.success) throw new Error(formatZodError(file, parsed.error, configSchema, setBy));
  return parsed.data;
}

/** Reads and validates a config file (no environment: see load.ts); throws one-line errors. */
export function loadConfigFile(file: string): SpakConfigFile {
  return validateConfig(readConfigJson(file), file);
}

/** The key bytes of an entry with secret or secretFile. */
export function resolveSecret(entry: { secret?: string | undefined; secretFile?: string | undefined }, where: string): Buffer {
  if ((entry.secret === undefined) === (entry.secretFile === undefined))
    throw new Error(`${where}: give exactly one of secret or secretFile`);
  if (entry.secret !== undefined) return parseHexKey(entry.secret, `${where}.secret`);
  let text: string;
  try {
    text = readFileSync(entry.secretFile!, 'utf8');
  } catch (err) {
    throw new Error(`${where}.secretFile: cannot read ${entry.secretFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseHexKey(text, `${where}.secretFile ${entry.secretFile}`);
}
