// Knock mode commands: `keygen server|client`, `knock`, `profile`. Registered from main.ts; the
// SYN-mode commands are untouched (a bare `spak keygen` still prints a 128-bit hex key).
import { spawn } from 'node:child_process';
import { isIP } from 'node:net';
import path from 'node:path';
import type { Command } from 'commander';
import { loadBundle, saveBundle, type Bundle } from '../knock/bundle.js';
import { formatOpen, parseOpen, sendKnock, waitForTcp } from '../knock/sender.js';
import { clientIdOf, formatClientId, generateX25519, loadPublicKey, privatePem, publicPem, writeFileMode } from '../knock/keys.js';
import { checkProfileName, deleteProfile, getProfile, listProfiles, profilesDir, writeProfile, type ProfileFields } from '../knock/profiles.js';
import { UsageError } from './usage.js';
import { makeDirectory } from '../config/dirs.js';
import { hostPort } from '../wire/address.js';

function port(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535) throw new UsageError(`bad ${what} "${text}": expected 1-65535`);
  return n;
}

const usage = <T>(f: () => T): T => {
  try {
    return f();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
};

function outDir(dir: string): string {
  makeDirectory(dir, 'directory');
  return dir;
}

function keygenServer(o: { out: string; force?: boolean }): void {
  const dir = outDir(o.out);
  const k = generateX25519();
  writeFileMode(path.join(dir, 'server.key'), privatePem(k.privateKey), 0o600, o.force);
  writeFileMode(path.join(dir, 'server.pub'), publicPem(k.publicKey), 0o644, o.force);
  process.stdout.write(`spak keygen: ${path.join(dir, 'server.key')} (private, 0600) and ${path.join(dir, 'server.pub')} (give it to clients)\n`);
}

function keygenClient(o: { name: string; serverPub: string; out: string; host?: string; port?: string; force?: boolean }): void {
  const name = usage(() => checkProfileName(o.name));
  const serverKey = loadPublicKey(o.serverPub);
  const p = port(o.port, '--port');
  const dir = outDir(o.out);
  const k = generateX25519();
  const id = clientIdOf(k.publicKey);
  const bundle: Bundle = { name, clientId: id, clientKey: k.privateKey, serverKey, ...(o.host !== undefined ? { host: o.host } : {}), ...(p !== undefined ? { port: p } : {}) };
  writeFileMode(path.join(dir, `${name}.key`), privatePem(k.privateKey), 0o600, o.force);
  writeFileMode(path.join(dir, `${name}.pub`), publicPem(k.publicKey), 0o644, o.force);
  saveBundle(path.join(dir, `${name}.spak`), bundle, o.force);
  process.stdout.write(
    `spak keygen: client ${name}, id ${formatClientId(id)}: ${path.join(dir, `${name}.spak`)} (the bundle: give it to the client, 0600), ` +
      `${path.join(dir, `${name}.pub`)} (goes into the server's clients directory)\n`,
  );
}

interface KnockOpts { port?: string; bundle?: string; open?: string; address?: string; duration?: string; wait: string }

async function knock(target: string, command: string[], o: KnockOpts): Promise<void> {
  const profile = usage(() => (/^[a-z0-9][a-z0-9_-]*$/.test(target) && !isIP(target) ? getProfile(target) : undefined));
  const bundle = o.bundle !== undefined ? loadBundle(o.bundle) : profile?.bundle;
  if (!bundle) throw new UsageError(profile ? `profile ${target} has no bundle` : `give --bundle FILE (or a profile name: "${target}" is not one; spak profile list)`);
  const host = profile ? (profile.host ?? bundle.host) : target;
  if (host === undefined) throw new UsageError(`profile ${target} has no host, and its bundle none either`);
  const p = port(o.port, '--port') ?? profile?.port ?? bundle.port;
  if (p === undefined) throw new UsageError('give --port P: the server\'s knock port (not in the bundle or profile)');
  const open = usage(() => parseOpen(o.open ?? profile?.open ?? ''));
  const address = o.address ?? profile?.address;
  if (address !== undefined && isIP(address) === 0) throw new UsageError(`bad --address "${address}": not an IP address`);
  const durationS = o.duration === undefined ? 0 : Number(o.duration);
  if (!Number.isInteger(durationS) || durationS < 0) throw new UsageError(`bad --duration "${o.duration}": seconds, a whole number`);
  const waitS = Number(o.wait);
  if (!Number.isFinite(waitS) || waitS < 0) throw new UsageError(`bad --wait "${o.wait}"`);
  const sent = await sendKnock({ host, port: p, bundle, open, ...(address !== undefined ? { address } : {}), durationS });
  process.stderr.write(`spak knock: sent ${sent.bytes} bytes to ${hostPort(sent.address, sent.port)} as client ${formatClientId(sent.clientId)} from ${sent.named}${open.length ? ` asking for ${formatOpen(open)}` : ''}\n`);
  if (command.length === 0) return;
  const tcp = open.find((a) => a.proto === 'tcp');
  if (tcp) {
    if (!(await waitForTcp(sent.address, tcp.port, waitS * 1000))) throw new Error(`${sent.address} port ${tcp.port} did not answer within ${waitS} s of the knock`);
  }
  process.exitCode = await run(command);
}

/** Runs the command with our stdio; its exit status becomes ours (128+signal when killed). */
function run(command: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: 'inherit' });
    child.once('error', (err) => reject(new Error(`${command[0]}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'command not found' : err.message}`)));
    child.once('exit', (code, signal) => {
      const signals: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
      resolve(code ?? 128 + (signal ? signals[signal] ?? 1 : 1));
    });
  });
}

function profileFields(o: Record<string, string | undefined>): ProfileFields {
  const f: ProfileFields = {};
  if (o.host !== undefined) f.host = o.host;
  const p = port(o.port, '--port');
  if (p !== undefined) f.port = p;
  if (o.bundle !== undefined) f.bundle = loadBundle(o.bundle);
  if (o.open !== undefined) {
    usage(() => parseOpen(o.open!));
    f.open = o.open;
  }
  if (o.address !== undefined) {
    if (isIP(o.address) === 0) throw new UsageError(`bad --address "${o.address}"`);
    f.address = o.address;
  }
  return f;
}

export function registerKnock(program: Command): void {
  const keygen = program.commands.find((c) => c.name() === 'keygen')!;
  keygen.description('print a new random 128-bit key as 32 hex characters (SYN mode); `keygen server|client` make knock-mode keys');
  keygen.command('server').description('make the server\'s X25519 key pair: DIR/server.key (0600) and DIR/server.pub')
    .requiredOption('--out <dir>', 'directory to write to').option('--force', 'replace existing files')
    .action(keygenServer);
  keygen.command('client').description('make a client key pair and its bundle NAME.spak (private key, server public key, id, host, port)')
    .requiredOption('--name <name>', 'client name').requiredOption('--server-pub <file>', 'the server\'s public key (server.pub)')
    .requiredOption('--out <dir>', 'directory to write to').option('--host <host>', 'server host for the bundle')
    .option('--port <port>', 'server knock port for the bundle').option('--force', 'replace existing files')
    .action(keygenClient);

  program.command('knock').description('send one knock (UDP, no root); with `-- cmd...`, wait until the first opened TCP port answers, then run cmd')
    .argument('<target>', 'server host or address, or a profile name').argument('[command...]', 'after --: the command to run once the port answers')
    .option('-p, --port <port>', 'the server\'s knock port').option('-b, --bundle <file>', 'the client bundle (NAME.spak)')
    .option('--open <list>', 'access to ask for, e.g. tcp/22,udp/51820 (default: what the server allows this client)')
    .option('--address <ip>', 'the address the knock is sent from, as the server will see it (default: the local address on the route to the server); give the public one behind NAT')
    .option('--duration <seconds>', 'how long to ask for (default: the server\'s)').option('--wait <seconds>', 'how long to wait for the port', '10')
    .action(knock);

  const profile = program.command('profile').description(`knock profiles (in ${profilesDir()}, or SPAK_PROFILE_<NAME>_* variables)`);
  const withFields = (c: Command): Command => c.option('--host <host>').option('--port <port>').option('--bundle <file>', 'bundle to copy into the profile')
    .option('--open <list>', 'e.g. tcp/22').option('--address <ip>', 'the address knocks are sent from, as the server sees it (e.g. the public one behind NAT)');
  withFields(profile.command('create').argument('<name>')).action((name: string, o: Record<string, string>) => {
    const f = profileFields(o);
    if (!f.bundle) throw new UsageError('spak profile create needs --bundle FILE');
    writeProfile(usage(() => checkProfileName(name)), f, 'create');
    process.stdout.write(`spak profile: created ${name}\n`);
  });
  withFields(profile.command('set').argument('<name>')).action((name: string, o: Record<string, string>) => {
    writeProfile(usage(() => checkProfileName(name)), profileFields(o), 'set');
    process.stdout.write(`spak profile: updated ${name}\n`);
  });
  profile.command('list').action(() => {
    for (const n of listProfiles()) process.stdout.write(`${n}\n`);
  });
  profile.command('show').argument('<name>').action((name: string) => {
    const p = getProfile(usage(() => checkProfileName(name)));
    if (!p) throw new Error(`no profile ${name}`);
    const b = p.bundle;
    process.stdout.write(`${[
      `name: ${p.name} (from ${p.source})`, `host: ${p.host ?? b?.host ?? '-'}`, `port: ${p.port ?? b?.port ?? '-'}`,
      `open: ${p.open || '-'}`, `address: ${p.address ?? '-'}`,
      `bundle: ${b ? `${b.name}, client id ${formatClientId(b.clientId)}, server key ${publicPem(b.serverKey).split('\n')[1]}` : '-'}`,
    ].join('\n')}\n`);
  });
  profile.command('delete').argument('<name>').action((name: string) => {
    if (!deleteProfile(usage(() => checkProfileName(name)))) throw new Error(`no profile file for ${name}`);
    process.stdout.write(`spak profile: deleted ${name}\n`);
  });
  for (const c of [...keygen.commands, program.commands.find((c) => c.name() === 'knock')!, profile, ...profile.commands]) c.exitOverride();
}


