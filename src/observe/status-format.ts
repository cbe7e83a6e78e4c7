// The readable form of `spak status` (the JSON form is InterfaceStatus as it is).
import type { InterfaceStatus } from './status.js';
import { hostPort } from '../wire/address.js';


function describeAddress(a: string): string {
  if (a === '0.0.0.0') return '0.0.0.0 (every IPv4 address)';
  if (a === '::') return ':: (every IPv6 address)';
  return a;
}

function duration(s: number): string {
  if (s <= 0) return 'expired (removed at the next sweep)';
  if (s < 120) return `${Math.floor(s)} s left`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s left`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min left`;
}

function table(rows: string[][], indent = '    '): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
}

export function formatStatus(s: InterfaceStatus): string {
  const out: string[] = [];
  const link = !s.link
    ? 'no pinned link: not protected'
    : `${s.link.hook.toUpperCase()}${s.link.mode ? ` ${s.link.mode}` : ''}${s.link.attached ? '' : ' (DETACHED: the interface is gone)'}, link id ${s.link.id}, program id ${s.link.programId}`;
  out.push(`${s.interface}: ${link}`);
  out.push(`  daemon: ${s.daemonPid !== null ? `running, pid ${s.daemonPid}` : 'none (the pinned program stays in force)'}`);
  out.push(`  pinned at ${s.pinDir}`);
  if (s.stepSeconds !== null) out.push(`  time step ${s.stepSeconds} s, window +-${s.stepWindow}; knock port ${s.knockPort ?? 'off'}`);
  out.push(`  key ids: ${s.keyIds.length ? s.keyIds.join(', ') : '(none)'}`);
  out.push('  protected destinations:');
  if (s.destinations.length === 0) out.push('    (none)');
  else out.push(...table(s.destinations.map((d) => [
    d.protocol, d.address === '0.0.0.0' || d.address === '::' ? describeAddress(d.address) : hostPort(d.address, d.port),
    d.address === '0.0.0.0' || d.address === '::' ? `port ${d.port}` : '',
    d.protocol === 'tcp' ? `key ids ${d.keyIds.join(',') || '-'}` : 'knock/always-allow only', d.bindSource ? 'source-bound' : '',
  ])));
  const fill = Object.entries(s.tables).map(([t, f]) => `${t} ${f.entries}/${f.capacity}`).join(', ');
  out.push(`  tables (entries/capacity): ${fill || '(unreadable)'}`);
  out.push(`  allowlist: ${s.allowlist.length} entr${s.allowlist.length === 1 ? 'y' : 'ies'}`);
  if (s.allowlist.length) out.push(...table(s.allowlist.map((a) => [a.address, `${a.protocol}/${a.port}`, duration(a.secondsLeft)])));
  out.push(`  counters${s.rates ? ' (total, per second over the sample)' : ' (total)'}:`);
  const rows = Object.entries(s.counters).filter(([k, v]) => (v ?? 0) !== 0 || (s.rates?.[k as keyof typeof s.rates] ?? 0) !== 0);
  if (rows.length === 0) out.push('    (no packets counted)');
  else out.push(...table(rows.map(([k, v]) => [k, String(v), s.rates ? `${(s.rates[k as keyof typeof s.rates] ?? 0).toFixed(1)}/s` : ''])));
  for (const p of s.problems) out.push(`  problem: ${p}`);
  return out.join('\n');
}
