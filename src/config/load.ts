// Where the configuration comes from, in order of precedence (highest first):
//   1. command-line options (--step-seconds, --xdp-mode, ...; applied by the command itself),
//   2. SPAK_* environment variables, or SPAK_*_FILE naming a file with the value (env.ts),
//   3. the configuration file: --config FILE, else $SPAK_CONFIG, else /etc/spak/spak.json,
//   4. the schema's defaults.
import { existsSync } from 'node:fs';
import { ConfigError, applyEnvOverrides, readEnv, type Env } from './env.js';
import { configSchema, readConfigJson, validateConfig, type SpakConfigFile } from './schema.js';
import { parseHexKey } from './keys.js';

export { ConfigError, readEnv, type Env };

/** The configuration file used when neither --config nor SPAK_CONFIG names one. */
export const DEFAULT_CONFIG_PATH = '/etc/spak/spak.json';

export interface ConfigPath {
  file: string;
  /** How it was chosen, for the error when it cannot be read. */
  from: '--config' | 'SPAK_CONFIG' | 'default';
}

/** --config wins, then SPAK_CONFIG (or SPAK_CONFIG_FILE), then the default path. */
export function configPath(explicit: string | undefined, env: Env = process.env): ConfigPath {
  if (explicit !== undefined) return { file: explicit, from: '--config' };
  const fromEnv = readEnv('SPAK_CONFIG', env);
  if (fromEnv !== undefined) return { file: fromEnv, from: 'SPAK_CONFIG' };
  return { file: DEFAULT_CONFIG_PATH, from: 'default' };
}

/** Reads the file, writes the SPAK_* overrides in, validates the result; throws one-line errors. */
export function loadConfig(where: ConfigPath, env: Env = process.env): SpakConfigFile {
  if (where.from === 'default' && !existsSync(where.file))
    throw new ConfigError(
      `no configuration: ${where.file} does not exist (write it, see examples/spak.json; or give --config FILE, SPAK_CONFIG=FILE, or the positional arguments)`,
    );
  const json = readConfigJson(where.file);
  const { json: merged, setBy } = applyEnvOverrides(json, configSchema, env);
  return validateConfig(merged, where.file, setBy);
}

/** The positional form's key: SECRET_KEY, or the file SECRET_KEY_FILE names. */
export function secretKeyFromEnv(env: Env = process.env): Buffer {
  const hex = readEnv('SECRET_KEY', env);
  if (hex === undefined)
    throw new ConfigError('SECRET_KEY is not set: export SECRET_KEY=<32 hex characters> or SECRET_KEY_FILE=<file> (spak keygen makes one)');
  const what = env.SECRET_KEY ? 'SECRET_KEY' : `SECRET_KEY_FILE ${env.SECRET_KEY_FILE}`;
  return parseHexKey(hex, what);
}
