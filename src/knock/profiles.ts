/**
 * Knock profiles: named host, port, bundle and defaults, so `spak knock NAME -- ssh ...` is enough.
 * Files: $XDG_CONFIG_HOME/spak/profiles/NAME.json (default ~/.config/spak/profiles), 0600 in a
 * 0700 directory, the bundle embedded (a profile holds a private key). The environment can define
 * or override any field, for CI runners and containers: SPAK_PROFILE_<NAME>_HOST, _PORT, _BUNDLE
 * (a bundle file, or the bundle's JSON itself), _OPEN (tcp/22,udp/51820) and _ADDRESS; <NAME> is
 * the profile name upper-cased with '-' as '_'; each also as <VAR>_FILE, naming a file that holds the
 * value. The environment wins over the file, field by field.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bundleText, loadBundle, parseBundle, type Bundle } from './bundle.js';
import { writeFileMode } from './keys.js';
import { readEnv } from '../config/env.js';
import { makeDirectory } from '../config/dirs.js';

export interface Profile {
  name: string;
  host?: string;
  port?: number;
  bundle?: Bundle;
  open?: string;
  address?: string;
  /** Where each field came from, for `profile show`. */
  source: 'file' | 'env' | 'file+env';
}

const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const FIELDS = ['HOST', 'PORT', 'BUNDLE', 'OPEN', 'ADDRESS'] as const;

export function checkProfileName(name: string): string {
  if (!NAME_RE.test(name)) throw new Error(`bad profile name "${name}": lower-case letters, digits, '-' and '_', starting with a letter or digit`);
  return name;
}

export function profilesDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(env.HOME ?? os.homedir(), '.config');
  return path.join(base, 'spak', 'profiles');
}

const envKey = (name: string, field: string): string => `SPAK_PROFILE_${name.toUpperCase().replace(/-/g, '_')}_${field}`;

function parsePort(text: string, what: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535) throw new Error(`${what}: bad port "${text}"`);
  return n;
}

function readFileProfile(name: string, env: NodeJS.ProcessEnv): Omit<Profile, 'source'> | undefined {
  const file = path.join(profilesDir(env), `${name}.json`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new Error(`${file}: not JSON`);
  }
  const p: Omit<Profile, 'source'> = { name };
  if (typeof j.host === 'string') p.host = j.host;
  if (j.port !== undefined) p.port = parsePort(String(j.port), file);
  if (j.bundle !== undefined) p.bundle = parseBundle(JSON.stringify(j.bundle), `${file}: bundle`);
  if (typeof j.open === 'string') p.open = j.open;
  if (typeof j.address === 'string') p.address = j.address;
  return p;
}

/** A profile from its file and the environment; undefined when neither defines it. */
export function getProfile(name: string, env: NodeJS.ProcessEnv = process.env): Profile | undefined {
  checkProfileName(name);
  const fromFile = readFileProfile(name, env);
  // Each variable may also come from a file: SPAK_PROFILE_<NAME>_<FIELD>_FILE (config/env.ts).
  const e = (f: string): string | undefined => readEnv(envKey(name, f), env);
  const anyEnv = FIELDS.some((f) => e(f) !== undefined);
  if (!fromFile && !anyEnv) return undefined;
  const p: Profile = { ...(fromFile ?? { name }), source: fromFile ? (anyEnv ? 'file+env' : 'file') : 'env' };
  if (e('HOST') !== undefined) p.host = e('HOST')!;
  if (e('PORT') !== undefined) p.port = parsePort(e('PORT')!, envKey(name, 'PORT'));
  const b = e('BUNDLE');
  if (b !== undefined) p.bundle = b.trim().startsWith('{') ? parseBundle(b, envKey(name, 'BUNDLE')) : loadBundle(b);
  if (e('OPEN') !== undefined) p.open = e('OPEN')!;
  if (e('ADDRESS') !== undefined) p.address = e('ADDRESS')!;
  return p;
}

/** Names of every profile, from files and the environment, sorted. */
export function listProfiles(env: NodeJS.ProcessEnv = process.env): string[] {
  const names = new Set<string>();
  try {
    for (const f of readdirSync(profilesDir(env))) if (f.endsWith('.json') && NAME_RE.test(f.slice(0, -5))) names.add(f.slice(0, -5));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  for (const k of Object.keys(env)) {
    const m = /^SPAK_PROFILE_([A-Z0-9_]+)_(HOST|PORT|BUNDLE|OPEN|ADDRESS)(_FILE)?$/.exec(k);
    if (m) names.add(m[1]!.toLowerCase());
  }
  return [...names].sort();
}

export interface ProfileFields { host?: string; port?: number; bundle?: Bundle; open?: string; address?: string }

/** Writes a profile file (0600, directory 0700). `create` refuses an existing one; set merges. */
export function writeProfile(name: string, fields: ProfileFields, mode: 'create' | 'set', env: NodeJS.ProcessEnv = process.env): void {
  checkProfileName(name);
  const dir = profilesDir(env);
  const existing = readFileProfile(name, env);
  if (mode === 'create' && existing) throw new Error(`profile ${name} exists (spak profile set ${name} changes it)`);
  if (mode === 'set' && !existing) throw new Error(`no profile file for ${name} (spak profile create ${name} makes one)`);
  const merged = { ...existing, ...fields };
  const out: Record<string, unknown> = {};
  if (merged.host !== undefined) out.host = merged.host;
  if (merged.port !== undefined) out.port = merged.port;
  if (merged.open !== undefined) out.open = merged.open;
  if (merged.address !== undefined) out.address = merged.address;
  if (merged.bundle !== undefined) out.bundle = JSON.parse(bundleText(merged.bundle));
  makeDirectory(dir, 'profile directory');
  writeFileMode(path.join(dir, `${name}.json`), `${JSON.stringify(out, null, 2)}\n`, 0o600, true);
}

export function deleteProfile(name: string, env: NodeJS.ProcessEnv = process.env): boolean {
  checkProfileName(name);
  const file = path.join(profilesDir(env), `${name}.json`);
  try {
    readFileSync(file);
  } catch {
    return false;
  }
  rmSync(file);
  return true;
}
