// What a daemon's command line and config file say about logs and metrics, and starting the
// metrics endpoint the way a daemon should: a port given explicitly that cannot be bound is an
// error; the default one taken by something else is a warning (protection matters more).
import { InvalidArgumentError } from 'commander';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config/schema.js';
import type { LogSettings } from './log.js';
import { DEFAULT_METRICS_LISTEN, DEFAULT_METRICS_PORT, parseListen, UNIX_LISTEN, startMetrics, type MetricsEndpoint, type MetricsSources } from './metrics.js';

export interface MetricsSetting {
  listen: string;
  port: number;
  explicit: boolean;
  /** A unix socket's permissions (metrics.mode) and group (the service account's, given by the daemon). */
  socketMode?: number | undefined;
  socketGid?: number | undefined;
}

export interface ObserveSettings {
  log: LogSettings;
  /** null: metrics off. */
  metrics: MetricsSetting | null;
}

/** commander argument parser for --metrics: checks ADDR:PORT or off (a usage error, exit 2), keeps the text. */
export function metricsArg(text: string): string {
  try {
    parseListen(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return text;
}

/**
 * o: the command's options (logLevel, logFile, metrics); given(name): was it on the command
 * line (which wins over the file); cfg: the server section of --config, if any.
 */
export function observeSettings(o: Record<string, unknown>, given: (name: string) => boolean, cfg?: ServerConfig): ObserveSettings {
  const level = given('logLevel') || !cfg?.log ? String(o.logLevel ?? 'info') : cfg.log.level;
  const file = o.logFile !== undefined ? String(o.logFile) : cfg?.log?.file;
  let metrics: MetricsSetting | null;
  if (o.metrics !== undefined && given('metrics')) {
    const m = parseListen(String(o.metrics));
    metrics = m && { ...m, explicit: true, ...socketMode(m.listen, cfg?.metrics?.mode) }; // a socket given here keeps the file's mode
  } else if (cfg?.metrics) {
    metrics = cfg.metrics.enabled
      ? { listen: cfg.metrics.listen, port: cfg.metrics.port, explicit: true, ...socketMode(cfg.metrics.listen, cfg.metrics.mode) }
      : null;
  } else {
    metrics = { listen: DEFAULT_METRICS_LISTEN, port: DEFAULT_METRICS_PORT, explicit: false };
  }
  return { log: { level, file }, metrics };
}

/** metrics.mode (octal text) for a unix socket; nothing for an address. */
function socketMode(listen: string, mode: string | undefined): { socketMode?: number } {
  return UNIX_LISTEN.test(listen) && mode !== undefined ? { socketMode: parseInt(mode, 8) } : {};
}

/** Starts the endpoint (null when off, or when the default port is taken: then a warning). */
export async function startDaemonMetrics(m: MetricsSetting | null, sources: MetricsSources, logger: Logger): Promise<MetricsEndpoint | null> {
  if (!m) return null;
  try {
    return await startMetrics({ listen: m.listen, port: m.port, sources, logger, socketMode: m.socketMode, socketGid: m.socketGid });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!m.explicit && (code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL')) {
      logger.warn({ err }, `metrics: ${m.listen}:${m.port} is not free (${code}); no metrics endpoint (set --metrics ADDR:PORT or off)`);
      return null;
    }
    const where = m.listen.startsWith('unix:') ? m.listen : `${m.listen}:${m.port}`;
    throw new Error(`metrics: cannot listen on ${where}: ${code === 'EEXIST' ? (err as Error).message : code ?? (err as Error).message}`);
  }
}
