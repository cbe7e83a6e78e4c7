// Command-line values checked by the same schema as the configuration file, so that defaults and
// ranges live only in schema.ts: the positional form (spak server IP PORT KEY_ID IFACE, spak client
// ...) is turned into a configuration object and validated like --config, and a flag that
// overrides the file (--step-seconds, ...) is checked by its field's schema. An error is one line
// naming the argument as it was written: bad port "ssh": expected a whole number from 1 to 65535.
import type { z } from 'zod';
import { childSchema, ConfigError, objectShape, unwrap } from './env.js';
import { clientSchema, configSchema, formatZodError, serverSchema, type SpakConfigFile } from './schema.js';

const SECTIONS = { server: serverSchema, client: clientSchema } as const;
type Section = keyof typeof SECTIONS;

type Issue = z.core.$ZodIssue;

/** An argument as given: what the messages call it and its text. */
export interface ArgText {
  what: string;
  text: string;
}

/** The text as a number when it is a whole number, else the text itself (which the schema refuses). */
export function wholeNumber(text: string): number | string {
  return /^\d+$/.test(text) ? Number(text) : text;
}

function schemaAt(root: z.ZodType, path: readonly PropertyKey[]): z.ZodType | undefined {
  let s: z.ZodType | undefined = root;
  for (const key of path) s = s && childSchema(s, key);
  return s;
}

/** A number field's bounds as the schema has them. */
function range(s: z.ZodType | undefined): string {
  const n = s && (unwrap(s) as { minValue?: number | null; maxValue?: number | null });
  // .int() alone bounds a number by the safe integers: that is no range worth naming.
  const bound = (v: number | null | undefined) => (typeof v === 'number' && Math.abs(v) < Number.MAX_SAFE_INTEGER ? v : null);
  const min = bound(n?.minValue);
  const max = bound(n?.maxValue);
  if (min !== null && max !== null) return `from ${min} to ${max}`;
  if (min !== null) return `of at least ${min}`;
  if (max !== null) return `of at most ${max}`;
  return '';
}

function explain(issue: Issue, s: z.ZodType | undefined): string {
  const bounds = range(s);
  if (issue.code === 'invalid_type' && issue.expected === 'number') return `expected a whole number${bounds ? ` ${bounds}` : ''}`;
  if ((issue.code === 'too_small' || issue.code === 'too_big') && bounds) return `must be ${bounds.replace(/^of /, '')}`;
  return issue.message;
}

function badArg(arg: ArgText, issue: Issue, s: z.ZodType | undefined): ConfigError {
  const shown = /^\d+$/.test(arg.text) ? arg.text : `"${arg.text}"`;
  return new ConfigError(`bad ${arg.what} ${shown}: ${explain(issue, s)}`);
}

/**
 * Validates a configuration built from command-line arguments. `args` names the argument behind
 * each field, by its dotted path ("server.protect.0.port"); throws a ConfigError of one line.
 */
export function configFromArgs(json: unknown, args: ReadonlyMap<string, ArgText>): SpakConfigFile {
  const parsed = configSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const arg = args.get(issue.path.join('.'));
  if (!arg) throw new ConfigError(formatZodError('the command line', parsed.error, configSchema));
  throw badArg(arg, issue, schemaAt(configSchema, issue.path));
}

function field(section: Section, key: string): z.ZodType {
  const s = objectShape(SECTIONS[section])?.[key];
  if (!s) throw new Error(`${section}.${key} is not in the schema`);
  return s;
}

/** A number flag (--step-seconds for server.stepSeconds), checked by its field's schema. */
export function numberArg(section: Section, key: string, arg: ArgText): number {
  const s = field(section, key);
  const parsed = s.safeParse(wholeNumber(arg.text));
  if (!parsed.success) throw badArg(arg, parsed.error.issues[0]!, s);
  return parsed.data as number;
}

/** The schema's default of a field, for --help. */
export function schemaDefault(section: Section, key: string): string {
  const def = (field(section, key) as unknown as { _zod: { def: { defaultValue?: unknown } } })._zod.def.defaultValue;
  return def === undefined ? '' : String(def);
}
