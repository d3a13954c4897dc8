// What the RPC layer counts for metrics, without depending on prom-client.

export interface ServiceCounters {
  messagesAppended(n: number): void;
  buildDataStored(): void;
}

export const NO_COUNTERS: ServiceCounters = { messagesAppended: () => {}, buildDataStored: () => {} };
