// The design fetcher's settings (config.ts fills them from flags and the
// environment; design/ never imports config.ts).
import type { KeystoneOptions } from "../keystone/tokens.js";

export interface DesignConfig {
  /** Directories file:// references may read (after resolving symlinks); none by default. */
  roots: string[];
  /** PEM bundle trusted in addition to the system's CAs, for https sources. */
  extraCa: string | undefined;
  /** Hosts http(s) references may name; empty allows any. */
  allowedHosts: string[];
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxRedirects: number;
  retries: number;
  backoffMs: number;
  /** Bound of a fetch when the call has no deadline. */
  timeoutMs: number;
  cacheTtlMs: number;
  cacheMaxBytes: number;
  maxBytes: number;
  deckhandToken: string | undefined;
  keystone: KeystoneOptions | undefined;
}

export function defaultDesignConfig(overrides: Partial<DesignConfig> = {}): DesignConfig {
  return {
    roots: [],
    extraCa: undefined,
    allowedHosts: [],
    connectTimeoutMs: 5_000,
    idleTimeoutMs: 30_000,
    maxRedirects: 5,
    retries: 3,
    backoffMs: 200,
    timeoutMs: 60_000,
    cacheTtlMs: 180_000,
    cacheMaxBytes: 256 * 1024 * 1024,
    maxBytes: 64 * 1024 * 1024,
    deckhandToken: undefined,
    keystone: undefined,
    ...overrides,
  };
}
