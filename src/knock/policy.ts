// A knock client's policy: what its knocks may open, for how long, from where. NAME.json in the
// clients directory overrides the server-wide defaults of the config's knock section field by field.
import { z } from 'zod';
import { accessSpec, cidr, formatZodError, type KnockConfig } from '../config/schema.js';
import { parseNetwork, type Network } from '../wire/address.js';
import type { Access, Proto } from './datagram.js';

export interface KnockPolicy {
  allow: Access[];
  maxDurationSeconds: number;
  defaultDurationSeconds: number;
  /** Empty: any source. */
  fromNetworks: Network[];
  /** A knock may come from another address than it names (behind NAT): the packet source gets the grant. */
  nat: boolean;
  /** Live allowlist addresses this client may hold at once. */
  maxAddresses: number;
  idleExtensionSeconds: number;
  graceSeconds: number;
}

/** The server-wide defaults, as the config's knock section gives them (strings unparsed). */
export interface PolicyDefaults {
  allow: string[];
  maxDurationSeconds: number;
  defaultDurationSeconds: number;
  fromNetworks: string[];
  nat: boolean;
  maxAddresses: number;
  idleExtensionSeconds: number;
  graceSeconds: number;
}

const seconds = z.number().int().min(0).max(366 * 86400);
const duration = z.number().int().min(1).max(366 * 86400);
export const policySchema = z.strictObject({
  allow: z.array(accessSpec).max(64).optional(),
  maxDurationSeconds: duration.optional(),
  defaultDurationSeconds: duration.optional(),
  fromNetworks: z.array(cidr).optional(),
  nat: z.boolean().optional(),
  maxAddresses: z.number().int().min(1).max(1024).optional(),
  idleExtensionSeconds: seconds.optional(),
  graceSeconds: seconds.optional(),
});

export function parseAccess(spec: string): Access {
  const [proto, port] = spec.split('/');
  return { proto: proto as Proto, port: Number(port) };
}

/** A policy from NAME.json text (or null: the defaults); throws one-line errors. */
export function parsePolicy(json: string | null, defaults: PolicyDefaults, file = 'policy'): KnockPolicy {
  let given: z.infer<typeof policySchema> = {};
  if (json !== null) {
    let raw: unknown;
    try {
      raw = JSON.parse(json);
    } catch (err) {
      throw new Error(`${file}: not valid JSON: ${(err as Error).message}`);
    }
    const parsed = policySchema.safeParse(raw);
    if (!parsed.success) throw new Error(formatZodError(file, parsed.error, policySchema));
    given = parsed.data;
  }
  const p = { ...defaults, ...given };
  if (p.defaultDurationSeconds > p.maxDurationSeconds)
    throw new Error(`${file}: defaultDurationSeconds ${p.defaultDurationSeconds} is above maxDurationSeconds ${p.maxDurationSeconds}`);
  return {
    allow: p.allow.map(parseAccess),
    maxDurationSeconds: p.maxDurationSeconds,
    defaultDurationSeconds: p.defaultDurationSeconds,
    fromNetworks: p.fromNetworks.map(parseNetwork),
    nat: p.nat,
    maxAddresses: p.maxAddresses,
    idleExtensionSeconds: p.idleExtensionSeconds,
    graceSeconds: p.graceSeconds,
  };
}

/** The defaults a client without NAME.json (or a field it leaves out) gets. */
export const policyDefaults = (cfg: KnockConfig): PolicyDefaults => ({
  allow: cfg.allow, maxDurationSeconds: cfg.maxDurationSeconds, defaultDurationSeconds: cfg.defaultDurationSeconds,
  fromNetworks: cfg.fromNetworks, nat: cfg.nat, maxAddresses: cfg.maxAddresses, idleExtensionSeconds: cfg.idleExtensionSeconds, graceSeconds: cfg.graceSeconds,
});
