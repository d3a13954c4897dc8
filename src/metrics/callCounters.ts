// What the RPC layer counts for metrics, without depending on prom-client
// (calls.ts implements it; servers without metrics get the no-op version).

export interface ServiceCounters {
  messagesAppended(n: number): void;
  buildDataStored(): void;
  /** A key-authorized call refused by the per-address rate limit (server/rateLimit.ts). */
  nodeCallRateLimited(): void;
}

export const NO_COUNTERS: ServiceCounters = { messagesAppended: () => {}, buildDataStored: () => {}, nodeCallRateLimited: () => {} };
