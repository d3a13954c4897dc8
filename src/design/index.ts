// Assembles the design fetcher from configuration. Adding a scheme is one
// driver module and one line in the registry below.
import { HttpClient } from "../http/client.js";
import { keystoneTokens } from "../keystone/tokens.js";
import type { DesignConfig } from "./config.js";
import { deckhandDriver, staticToken } from "./deckhand.js";
import type { DesignDriver } from "./driver.js";
import { DesignFetcher, type DesignObserver } from "./fetcher.js";
import { fileDriver } from "./file.js";
import { httpDriver } from "./http.js";

/** `now` (epoch ms) is the clock of the cache and of token expiry; tests set it. `observer` counts fetches (metrics). */
export function createDesignFetcher(
  c: DesignConfig,
  now: () => number = Date.now,
  observer?: DesignObserver,
): { fetcher: DesignFetcher; close(): Promise<void> } {
  const http = new HttpClient({
    extraCa: c.extraCa,
    allowedHosts: c.allowedHosts,
    connectTimeoutMs: c.connectTimeoutMs,
    idleTimeoutMs: c.idleTimeoutMs,
    maxRedirects: c.maxRedirects,
    retries: c.retries,
    backoffMs: c.backoffMs,
  });
  const tokens = c.deckhandToken ? staticToken(c.deckhandToken) : c.keystone ? keystoneTokens(http, c.keystone, now) : undefined;
  const drivers = new Map<string, DesignDriver>([
    ["file", fileDriver(c.roots)],
    ["http", httpDriver(http)],
    ["https", httpDriver(http)],
    ["deckhand+http", deckhandDriver(http, tokens)],
    ["deckhand+https", deckhandDriver(http, tokens)],
  ]);
  const fetcher = new DesignFetcher(drivers, {
    ttlMs: c.cacheTtlMs,
    cacheMaxBytes: c.cacheMaxBytes,
    maxBytes: c.maxBytes,
    defaultTimeoutMs: c.timeoutMs,
    now,
    observer,
  });
  return { fetcher, close: () => http.close() };
}
