// One line per configuration mistake: the field, what is wrong, and how to fix it.
import type { z } from 'zod';
import { childSchema, closest, objectShape } from './env.js';

type Issue = z.core.$ZodIssue;

/** The schema at `path` under `root`, if the path leads anywhere. */
function schemaAt(root: z.ZodType | undefined, path: readonly PropertyKey[]): z.ZodType | undefined {
  let s = root;
  for (const key of path) {
    if (!s) return undefined;
    s = childSchema(s, key);
  }
  return s;
}

/** "server.protect[0].port" */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

/** The last named field of a path (array indexes skipped): what the value is. */
function fieldName(path: readonly PropertyKey[]): string {
  for (let i = path.length - 1; i >= 0; i--) if (typeof path[i] === 'string') return path[i] as string;
  return '';
}

const ADD: Record<string, string> = {
  keys: 'add keys: [{"id": 1, "secretFile": "/etc/spak/key1.hex"}] (spak keygen makes a key)',
  protect: 'add protect: [{"address": "198.51.100.1", "port": 22}] (what to protect)',
  destinations: 'add destinations: [{"address": "198.51.100.1", "port": 22, "keyId": 1, "secretFile": "/etc/spak/key1.hex"}]',
  interface: 'add interface: "eth0" (`ip link` lists the interfaces)',
  serverKeyFile: 'add serverKeyFile: the server\'s private key (spak keygen server makes one)',
  clientsDir: 'add clientsDir: the directory of NAME.pub client keys',
};

const isMissing = (issue: Issue): boolean => issue.code === 'invalid_type' && /received undefined$/.test(issue.message);
const isPortField = (name: string): boolean => name === 'port' || /Port$/.test(name);
const isAddressField = (name: string): boolean => /^(address|\w+Address|serverAddresses)$/.test(name);

/** The message to show for an issue (zod's, or a plainer one) and a one-line hint when there is one. */
export function describeIssue(issue: Issue, root?: z.ZodType): { message: string; hint?: string } {
  const name = fieldName(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const here = schemaAt(root, issue.path);
    const known = Object.keys((here && objectShape(here)) ?? {});
    const key = issue.keys[0] ?? '';
    const message = `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    const guess = closest(key, known);
    if (guess) return { message, hint: `did you mean "${guess}"?` };
    return known.length ? { message, hint: `known keys here: ${known.join(', ')}` } : { message };
  }
  if (isMissing(issue)) return { message: 'missing', hint: ADD[name] ?? `add ${name}` };
  if (issue.code === 'too_small' && issue.origin === 'array' && ADD[name]) return { message: issue.message, hint: ADD[name] };
  if (isPortField(name) && ['too_big', 'too_small', 'invalid_type'].includes(issue.code)) return { message: issue.message, hint: 'a port is 1-65535' };
  if ((name === 'keyId' || (name === 'id' && issue.path.includes('keys'))) && issue.code !== 'invalid_type')
    return { message: issue.message, hint: 'a key id is 0-65535' };
  if (name === 'secret') return { message: issue.message, hint: '32 hex characters; spak keygen makes a key (or use secretFile)' };
  if (name === 'interface' && issue.code === 'too_big') return { message: issue.message, hint: 'interface names are at most 15 characters' };
  if (/Capacity$/.test(name) && (issue.code === 'too_big' || issue.code === 'too_small'))
    return { message: issue.message, hint: 'a capacity is 1024-16777216 entries' };
  if (isAddressField(name) && issue.code === 'custom')
    return { message: issue.message, hint: `write it like 198.51.100.1 or 2001:db8::1${issue.path.includes('protect') ? ', or "*" for every address' : ''}` };
  if (issue.code === 'invalid_type' && issue.expected === 'number' && /received string$/.test(issue.message))
    return { message: issue.message, hint: 'write the number without quotes' };
  if (issue.code === 'invalid_type' && issue.expected === 'boolean' && /received string$/.test(issue.message))
    return { message: issue.message, hint: 'write true or false without quotes' };
  return { message: issue.message };
}
