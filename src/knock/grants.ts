// The allowlist entries knocks make: writeGrant writes one knock's entries, all or nothing;
// GrantTable records which client made which entry, so removing a client revokes its entries, also after
// a daemon restart: the allowlist map is pinned and outlives the daemon, so this record must too.
// Kept in a journal (journal.ts): one line appended per grant ("<key hex> <client id hex>
// <expires ns>"), rewritten atomically by prune(); on load, a line counts only while its entry is
// still in the map (after a reboot the map is empty and so is this).
import type { BpfMap } from '../bpf/libbpf.js';
import { allowSource, revokeSource } from '../server/allowlist.js';
import { decodeAllowKey, encodeAllowKey } from '../wire/layout.js';
import type { KnockGrant } from './decide.js';
import { Journal } from './journal.js';

export type AllowKey = Parameters<typeof revokeSource>[1];

/** A map key read back; one that does not decode counts as gone. */
function allowKeyFrom(raw: Buffer): AllowKey | null {
  try {
    return decodeAllowKey(raw);
  } catch {
    return null;
  }
}

/**
 * Writes a knock's entries to every allowlist (one per interface). All or nothing: a knock
 * answered "rejected" must not leave half its ports open, so on a failed write what was
 * written is put back as it was, and the error is thrown.
 */
export function writeGrant(maps: readonly BpfMap[], g: KnockGrant): void {
  const done: { key: AllowKey; raw: Buffer; map: BpfMap; old: Buffer | null }[] = [];
  try {
    for (const a of g.open) {
      const key: AllowKey = { addr: g.addr, proto: a.proto, port: a.port };
      const raw = encodeAllowKey(key);
      for (const map of maps) {
        const old = map.lookup(raw);
        allowSource(map, { ...key, expiresNs: g.expiresNs, idleNs: g.idleNs, graceNs: g.graceNs });
        done.push({ key, raw, map, old });
      }
    }
  } catch (err) {
    for (const d of done) {
      try {
        if (d.old) d.map.update(d.raw, d.old);
        else revokeSource(d.map, d.key);
      } catch {
        // the map refuses writes: the error thrown below says so
      }
    }
    throw err;
  }
}

interface Grant { key: AllowKey; expiresNs: bigint; clients: Set<number> }
const LINE = /^([0-9a-f]{40}) ([0-9a-f]{1,8}) (\d{1,20})$/;

export class GrantTable {
  #grants = new Map<string, Grant>();

  private constructor(private readonly journal: Journal, private readonly maps: () => BpfMap[]) {}

  /** `map`: the allowlist, or a function giving every interface's allowlist (one daemon, several interfaces). */
  static open(file: string, map: BpfMap | (() => BpfMap[])): GrantTable {
    const { journal, lines } = Journal.open(file);
    const t = new GrantTable(journal, typeof map === 'function' ? map : () => [map]);
    for (const line of lines) {
      const m = LINE.exec(line);
      const key = m && allowKeyFrom(Buffer.from(m[1]!, 'hex'));
      if (key) t.#record(m![1]!, key, parseInt(m![2]!, 16), BigInt(m![3]!));
    }
    t.prune(null);
    return t;
  }

  #record(hex: string, key: AllowKey, clientId: number, expiresNs: bigint): void {
    const g = this.#grants.get(hex) ?? { key, expiresNs, clients: new Set<number>() };
    if (expiresNs > g.expiresNs) g.expiresNs = expiresNs;
    g.clients.add(clientId);
    // Kept in the order last granted (also across restarts: the file is written in this order),
    // so the first of a client's is its oldest.
    this.#grants.delete(hex);
    this.#grants.set(hex, g);
  }

  /** The addresses clientId's entries allow, oldest grant first. */
  addressesOf(clientId: number): string[] {
    const out = new Set<string>();
    for (const g of this.#grants.values()) if (g.clients.has(clientId)) out.add(g.key.addr);
    // The oldest is the one whose newest entry is oldest: order by last appearance.
    const last = new Map<string, number>();
    let i = 0;
    for (const g of this.#grants.values()) if (g.clients.has(clientId)) last.set(g.key.addr, i++);
    return [...out].sort((a, b) => last.get(a)! - last.get(b)!);
  }

  /** Whether any client still holds an entry for addr. */
  held(addr: string): boolean {
    for (const g of this.#grants.values()) if (g.key.addr === addr) return true;
    return false;
  }

  /** How many addresses each client holds entries for. */
  addressCounts(): Map<number, number> {
    const per = new Map<number, Set<string>>();
    for (const g of this.#grants.values())
      for (const id of g.clients) {
        let s = per.get(id);
        if (!s) per.set(id, (s = new Set()));
        s.add(g.key.addr);
      }
    return new Map([...per].map(([id, s]) => [id, s.size]));
  }

  /** Revokes clientId's entries for addr (those no other client holds too); returns how many were in the map. */
  revokeAddress(clientId: number, addr: string): number {
    return this.#revokeWhere(clientId, (g) => g.key.addr === addr);
  }

  #revokeWhere(clientId: number, which: (g: Grant) => boolean): number {
    let n = 0;
    for (const [hex, g] of this.#grants) {
      if (!which(g) || !g.clients.delete(clientId) || g.clients.size > 0) continue;
      this.#grants.delete(hex);
      let had = false;
      for (const m of this.maps()) if (revokeSource(m, g.key)) had = true;
      if (had) n++;
    }
    return n;
  }

  /** Notes that clientId's knock wrote key (already in the map). */
  add(key: AllowKey, clientId: number, expiresNs: bigint): void {
    const hex = encodeAllowKey(key).toString('hex');
    this.#record(hex, key, clientId, expiresNs);
    this.journal.append(`${hex} ${clientId.toString(16)} ${expiresNs}`);
  }

  /** Revokes the entries only this client holds; returns how many were in the map. */
  revokeClient(clientId: number): number {
    return this.#revokeWhere(clientId, () => true);
  }

  /**
   * Forgets grants whose entry the map no longer has (the map is the truth: idle extension may keep
   * an entry past its expiry), looking only at those past nowNs (null: all); rewrites the file.
   */
  prune(nowNs: bigint | null): void {
    for (const [hex, g] of this.#grants) {
      if (nowNs !== null && g.expiresNs >= nowNs) continue;
      const raw = Buffer.from(hex, 'hex');
      if (this.maps().every((m) => m.lookup(raw) === null)) this.#grants.delete(hex);
    }
    const lines: string[] = [];
    for (const [hex, g] of this.#grants) for (const id of g.clients) lines.push(`${hex} ${id.toString(16)} ${g.expiresNs}`);
    this.journal.rewrite(lines);
  }

  get size(): number {
    return this.#grants.size;
  }

  close(): void {
    this.journal.close();
  }
}
