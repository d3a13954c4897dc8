// What the design fetcher announces as it works: DesignFetcher is an
// EventEmitter of these, as the watch hub is of watch/signals.ts's. Tests
// await them (River's testsignal, graphile-worker's EventMonitor) instead of
// sleeping to order their calls; in production nobody listens, and emitting
// to no listener costs a map lookup. References are the redacted ones:
// never a credential, should a listener log them.

export interface DesignSignals {
  /** A cache miss: a request to the source starts, for this caller and any that join it. */
  fetchStarted: [redacted: string];
  /** A caller joined the fetch of its reference already running; `waiting` counts its callers now. */
  fetchJoined: [redacted: string, waiting: number];
  /** A fetched document went into the cache (failures never do, nor documents larger than the cache). */
  cached: [redacted: string, bytes: number];
  /** A caller was answered from the cache. */
  cacheHit: [redacted: string];
}
