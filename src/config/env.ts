// SPAK_* environment variables: one per scalar field of the configuration schema, derived from the
// schema itself (so a field added there gets its variable with no change here), and the *_FILE
// convention for secrets (X_FILE names a file whose content is X's value).
//
//   server.stepSeconds        -> SPAK_SERVER_STEP_SECONDS
//   server.knock.clientsDir   -> SPAK_SERVER_KNOCK_CLIENTS_DIR
//   client.interface          -> SPAK_CLIENT_INTERFACE
//
// Arrays (keys, protect, destinations, ...) have no variables: they stay in the file.
import { readFileSync } from 'node:fs';
import type { z } from 'zod';

export type Env = Readonly<Record<string, string | undefined>>;

/** What a variable's text becomes before the schema sees it. */
export type LeafKind = 'string' | 'number' | 'boolean';

/** One overridable scalar field. */
export interface EnvField {
  /** The variable, e.g. SPAK_SERVER_STEP_SECONDS. */
  name: string;
  /** The field's path in the configuration, e.g. ['server', 'stepSeconds']. */
  path: string[];
  kind: LeafKind;
}

/** The one error type of configuration loading: a one-line message meant for the user. */
export class ConfigError extends Error {}

/** camelCase -> CAMEL_CASE (xdpMode -> XDP_MODE, flowIdleSeconds -> FLOW_IDLE_SECONDS). */
export function screamingSnake(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/[^A-Za-z0-9]+/g, '_').toUpperCase();
}

/**
 * A variable's value: X itself, or the content of the file X_FILE names (one trailing newline
 * trimmed). Both set is an error; an empty X counts as unset.
 */
export function readEnv(name: string, env: Env): string | undefined {
  const direct = env[name];
  const fileVar = `${name}_FILE`;
  const file = env[fileVar];
  const hasDirect = direct !== undefined && direct !== '';
  const hasFile = file !== undefined && file !== '';
  if (hasDirect && hasFile) throw new ConfigError(`${name} and ${fileVar} are both set: give one of them`);
  if (hasDirect) return direct;
  if (!hasFile) return undefined;
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new ConfigError(`${fileVar}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

type AnySchema = z.ZodType;
interface Def {
  type: string;
  innerType?: AnySchema;
  in?: AnySchema;
  shape?: Record<string, AnySchema>;
  element?: AnySchema;
}

function defOf(s: AnySchema): Def {
  return (s as unknown as { _zod: { def: Def } })._zod.def;
}

/** Strips optional/default/nullable/readonly/pipe wrappers down to the schema that holds the value. */
export function unwrap(s: AnySchema): AnySchema {
  for (;;) {
    const d = defOf(s);
    if (d.innerType && ['optional', 'default', 'prefault', 'nullable', 'readonly', 'catch', 'nonoptional'].includes(d.type)) s = d.innerType;
    else if (d.type === 'pipe' && d.in) s = d.in;
    else return s;
  }
}

/** The field names of an object schema (after unwrapping), or null when it is not an object. */
export function objectShape(s: AnySchema): Record<string, AnySchema> | null {
  const d = defOf(unwrap(s));
  return d.type === 'object' && d.shape ? d.shape : null;
}

/** The schema of one step of a path: an object's field or an array's element. */
export function childSchema(s: AnySchema, key: PropertyKey): AnySchema | undefined {
  const inner = unwrap(s);
  const d = defOf(inner);
  if (d.type === 'array') return typeof key === 'number' ? d.element : undefined;
  return typeof key === 'string' ? objectShape(inner)?.[key] : undefined;
}

function leafKind(s: AnySchema): LeafKind | null {
  const t = defOf(unwrap(s)).type;
  if (t === 'string' || t === 'enum' || t === 'literal') return 'string';
  if (t === 'number' || t === 'int' || t === 'bigint') return 'number';
  if (t === 'boolean') return 'boolean';
  return null;
}

/** Every scalar field of an object schema, nested objects included, as SPAK_* variables. */
export function envFields(schema: AnySchema, prefix = 'SPAK', at: string[] = []): EnvField[] {
  const shape = objectShape(schema);
  if (!shape) return [];
  const out: EnvField[] = [];
  for (const [key, child] of Object.entries(shape)) {
    const name = `${prefix}_${screamingSnake(key)}`;
    const path = [...at, key];
    const kind = leafKind(child);
    if (kind) out.push({ name, path, kind });
    else if (objectShape(child)) out.push(...envFields(child, name, path));
  }
  return out;
}

function convert(field: EnvField, text: string): string | number | boolean {
  if (field.kind === 'string') return text;
  const t = text.trim();
  if (field.kind === 'number') {
    if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(t)) throw new ConfigError(`${field.name}="${text}": not a number`);
    return Number(t);
  }
  if (/^(true|yes|on|1)$/i.test(t)) return true;
  if (/^(false|no|off|0)$/i.test(t)) return false;
  throw new ConfigError(`${field.name}="${text}": expected true or false`);
}

/** Levenshtein distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(up + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}

/** The closest of `known` to `word` (case and '_' ignored), if it is close enough to be a typo. */
export function closest(word: string, known: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(norm(word), norm(k));
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(norm(word).length / 3)) ? best : undefined;
}

/** Section prefixes whose variables must all be known: a typo there is an error, not silence. */
function sectionPrefixes(fields: EnvField[]): string[] {
  return [...new Set(fields.map((f) => `SPAK_${screamingSnake(f.path[0]!)}_`))];
}

export interface EnvOverrides {
  /** The configuration object with the variables written in. */
  json: unknown;
  /** Dotted field path ("server.stepSeconds") -> the variable that set it, for error messages. */
  setBy: Map<string, string>;
}

/**
 * Writes every SPAK_* variable (or its *_FILE) that names a field of `schema` into `json` (the
 * parsed file, not yet validated), creating sections as needed. Unknown variables under a section's
 * prefix (SPAK_SERVER_..., SPAK_CLIENT_...) are errors with a suggestion.
 */
export function applyEnvOverrides(json: unknown, schema: AnySchema, env: Env): EnvOverrides {
  const fields = envFields(schema);
  const known = new Set(fields.flatMap((f) => [f.name, `${f.name}_FILE`]));
  const prefixes = sectionPrefixes(fields);
  for (const name of Object.keys(env).sort()) {
    if (known.has(name) || !prefixes.some((p) => name.startsWith(p))) continue;
    const guess = closest(name.replace(/_FILE$/, ''), fields.map((f) => f.name));
    throw new ConfigError(
      `${name}: no such setting${guess ? `; did you mean ${guess}${name.endsWith('_FILE') ? '_FILE' : ''}?` : ' (see README: Configuration)'}`,
    );
  }
  const setBy = new Map<string, string>();
  let root: unknown = json;
  for (const field of fields) {
    const text = readEnv(field.name, env);
    if (text === undefined) continue;
    const value = convert(field, text);
    if (root === undefined || root === null) root = {};
    if (typeof root !== 'object' || Array.isArray(root)) break; // the schema reports the file's shape
    let obj = root as Record<string, unknown>;
    let ok = true;
    for (const key of field.path.slice(0, -1)) {
      if (obj[key] === undefined) obj[key] = {};
      const next = obj[key];
      if (typeof next !== 'object' || next === null || Array.isArray(next)) {
        ok = false; // not an object in the file: the schema says so, naming the field
        break;
      }
      obj = next as Record<string, unknown>;
    }
    if (!ok) continue;
    obj[field.path[field.path.length - 1]!] = value;
    setBy.set(field.path.join('.'), env[field.name] ? field.name : `${field.name}_FILE`);
  }
  return { json: root, setBy };
}
