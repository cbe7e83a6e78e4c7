// The clients directory: NAME.pub (the client's X25519 public key, as `spak keygen client` writes
// it) and an optional NAME.json policy per client. Scanned at start, on every fs.watch event and
// every few seconds (watch events can be lost, e.g. on NFS or when the directory is replaced).
// Bad files are reported and skipped: a client whose files do not parse is not served.
import { watch, readdirSync, readFileSync, type FSWatcher } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import path from 'node:path';
import { knockClient, type KnockClient } from './datagram.js';
import { clientIdOf, formatClientId, parsePublicPem, rawPublic } from './keys.js';
import { parsePolicy, type KnockPolicy, type PolicyDefaults } from './policy.js';

export interface LoadedClient extends KnockClient {
  policy: KnockPolicy;
  pubFile: string;
  policyFile: string | null;
  /** Changes when either file's content does. */
  fingerprint: string;
}

export interface ScanResult {
  clients: Map<number, LoadedClient>;
  problems: string[];
  /** The directory could not be read (other than missing): keep what is loaded. */
  unreadable: boolean;
}

const readOrNull = (file: string): string | null => {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
};

/** Reads the directory once. Never throws: every bad file is a line in `problems`. */
export function scanClientsDir(dir: string, serverPrivate: KeyObject, defaults: PolicyDefaults, previous?: Map<number, LoadedClient>): ScanResult {
  const clients = new Map<number, LoadedClient>();
  const problems: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => !n.startsWith('.')).sort();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { clients, problems: [`${dir}: no such directory: no knock clients`], unreadable: false };
    return { clients, problems: [`${dir}: cannot read: ${code ?? String(err)}`], unreadable: true };
  }
  const pubs = new Set(names.filter((n) => n.endsWith('.pub')).map((n) => n.slice(0, -4)));
  for (const n of names)
    if (n.endsWith('.json') && !pubs.has(n.slice(0, -5))) problems.push(`${path.join(dir, n)}: no ${n.slice(0, -5)}.pub next to it: ignored`);
  const dup = new Set<number>();
  for (const name of pubs) {
    const pubFile = path.join(dir, `${name}.pub`);
    const policyFile = path.join(dir, `${name}.json`);
    try {
      const pem = readOrNull(pubFile);
      if (pem === null) continue; // removed while we scanned
      const key = parsePublicPem(pem, pubFile);
      const json = readOrNull(policyFile);
      const fingerprint = `${rawPublic(key).toString('hex')}|${json ?? ''}`;
      const prev = previous?.get(clientIdOf(key));
      // Unchanged files: reuse what was derived (an X25519 agreement per client per rescan adds up).
      const c: LoadedClient = prev && prev.fingerprint === fingerprint && prev.name === name ? prev : {
        ...knockClient(serverPrivate, key, name),
        policy: parsePolicy(json, defaults, policyFile),
        pubFile,
        policyFile: json === null ? null : policyFile,
        fingerprint,
      };
      const other = clients.get(c.id);
      if (other || dup.has(c.id)) {
        if (other) problems.push(`${other.pubFile} and ${pubFile}: both have client id ${formatClientId(c.id)} (the same key, or a colliding one): neither is served`);
        else problems.push(`${pubFile}: client id ${formatClientId(c.id)} is already refused as a duplicate: not served`);
        clients.delete(c.id);
        dup.add(c.id);
        continue;
      }
      clients.set(c.id, c);
    } catch (err) {
      problems.push(`client ${name} not served: ${(err as Error).message}`);
    }
  }
  return { clients, problems, unreadable: false };
}

export interface ClientsChange { added: LoadedClient[]; removed: LoadedClient[]; changed: LoadedClient[] }

/**
 * Keeps `current` in step with the directory: onChange runs (synchronously, inside rescan) when a
 * client is added, removed or edited; onProblem once per distinct problem (not every rescan).
 */
export class ClientsDirectory {
  current = new Map<number, LoadedClient>();
  #watcher: FSWatcher | null = null;
  #timer: NodeJS.Timeout | null = null;
  #debounce: NodeJS.Timeout | null = null;
  #reported = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly serverPrivate: KeyObject,
    private readonly defaults: PolicyDefaults,
    private readonly onChange: (c: ClientsChange, now: Map<number, LoadedClient>) => void,
    private readonly onProblem: (line: string) => void,
    private readonly rescanMs = 5000,
  ) {}

  start(): void {
    this.rescan();
    this.#timer = setInterval(() => this.rescan(), this.rescanMs);
    this.#timer.unref();
    try {
      this.#watcher = watch(this.dir, () => this.#soon());
      this.#watcher.on('error', () => this.#watcher?.close()); // the periodic rescan carries on
    } catch {
      // no directory yet: the periodic rescan notices when it appears
    }
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#watcher?.close();
    this.#timer = this.#debounce = null;
    this.#watcher = null;
  }

  /** An editor writes a file in several steps: wait for the burst of events to settle. */
  #soon(): void {
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => this.rescan(), 50);
    this.#debounce.unref();
  }

  rescan(): void {
    const r = scanClientsDir(this.dir, this.serverPrivate, this.defaults, this.current);
    const fresh = new Set(r.problems);
    for (const p of fresh) if (!this.#reported.has(p)) this.onProblem(p);
    this.#reported = fresh;
    if (r.unreadable) return;
    const change: ClientsChange = { added: [], removed: [], changed: [] };
    for (const [id, c] of r.clients) {
      const old = this.current.get(id);
      if (!old) change.added.push(c);
      else if (old !== c) change.changed.push(c);
    }
    for (const [id, c] of this.current) if (!r.clients.has(id)) change.removed.push(c);
    this.current = r.clients;
    if (change.added.length + change.removed.length + change.changed.length > 0) this.onChange(change, r.clients);
  }
}
