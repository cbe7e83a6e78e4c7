// The counters spak prints (on SIGUSR1, at exit, from spak stats).
export type Counters = Record<string, number>;

/** Parses the last "spak <role> counters:" block in text; absent counters are 0 (read as undefined). */
export function parseCounters(text: string, role: 'server' | 'client' = 'server'): Counters | null {
  const marker = `spak ${role} counters:\n`;
  const at = text.lastIndexOf(marker);
  if (at < 0) return null;
  const out: Counters = {};
  for (const line of text.slice(at + marker.length).split('\n')) {
    const m = /^ {2}(\w+)\s+(\d+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
    else if (!/^ {2}\(no packets counted\)$/.test(line)) break;
  }
  return out;
}

/** A counter's value, 0 when absent. */
export function counter(c: Counters | null, name: string): number {
  return c?.[name] ?? 0;
}
