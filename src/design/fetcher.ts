// The design fetcher: parses a reference, dispatches on its scheme to a
// driver, and caches successes (never failures) in memory (an lru-cache),
// with a TTL and an LRU bound on total bytes. Concurrent fetches of one
// reference share one request (SharedWork). It announces what it does as
// DesignSignals (signals.ts).
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { LRUCache } from "lru-cache";
import { DomainError, InvalidArgumentError } from "../core/errors.js";
import { SharedWork } from "../util/sharedWork.js";
import type { DesignDocument, DriverRegistry, FetchContext } from "./driver.js";
import { designRefProblem, redactReference } from "./reference.js";
import type { DesignSignals } from "./signals.js";

export interface FetchedDesign extends DesignDocument {
  sha256: string;
  /** Epoch ms when it was fetched from the source. */
  fetchedAt: number;
  fromCache: boolean;
  /** The reference without credentials. */
  redacted: string;
}

/** What the fetcher reports for metrics (src/metrics implements it; no prom-client here). */
export interface DesignObserver {
  /**
   * A request to a source ended: one per cache miss, shared by the callers
   * that waited for it, retries and redirects included. `outcome` is "ok" or
   * the error's ErrorInfo reason (DESIGN_NOT_FOUND, DESIGN_SOURCE_UNAVAILABLE,
   * CANCELLED, ...; INTERNAL for anything that is not a domain error);
   * `bytes` is the document's size (0 on failure).
   */
  fetched(scheme: string, outcome: string, seconds: number, bytes: number): void;
  /** A call answered from the cache. */
  cacheHit(scheme: string): void;
}

export interface FetcherOptions {
  /** Told about fetches and cache hits (default: nobody). */
  observer?: DesignObserver;
  /** How long a fetched design is served from the cache (STATEMGMT_DESIGN_CACHE_TTL_MS); 0: not cached. */
  ttlMs: number;
  /** Total size of cached designs, least recently used evicted first (STATEMGMT_DESIGN_CACHE_MAX_BYTES); 0: not cached. */
  cacheMaxBytes: number;
  maxBytes: number;
  /** Used when the call has no deadline. */
  defaultTimeoutMs: number;
  now?: () => number;
}

/**
 * The cache is lru-cache's plain get and set, not its fetch(): that one
 * shares a fetch in flight but aborts it with its first caller's signal
 * (ours wait under their own, and the fetch ends when the last leaves), and
 * keeps it as a placeholder in the LRU order, where documents stored
 * meanwhile can evict it, which aborts it for every caller.
 */
export class DesignFetcher extends EventEmitter<DesignSignals> {
  /** Undefined when caching is off (a TTL or size of 0). */
  private readonly cache: LRUCache<string, FetchedDesign> | undefined;
  /** Fetches in flight: cancelled when no caller is left waiting for one. */
  private readonly inflight = new SharedWork<string, FetchedDesign, FetchContext>({ whenAbandoned: "abort" });
  private readonly now: () => number;
  /** Requests made to sources (cache misses), for metrics and tests. */
  upstreamFetches = 0;

  constructor(
    private readonly drivers: DriverRegistry,
    private readonly o: FetcherOptions,
  ) {
    super();
    this.now = o.now ?? Date.now;
    // Fresh while less than ttlMs has passed, and lru-cache keeps an entry
    // while no more than its ttl has: one less (on a clock of whole
    // milliseconds). A TTL of 1 ms served a document only within the
    // millisecond it came in, and an lru-cache ttl of 0 is no TTL at all: off.
    if (o.ttlMs > 1 && o.cacheMaxBytes > 0) {
      this.cache = new LRUCache<string, FetchedDesign>({
        maxSize: o.cacheMaxBytes,
        // lru-cache takes positive sizes only: an empty document counts 1 byte.
        sizeCalculation: (doc) => Math.max(1, doc.content.length),
        ttl: o.ttlMs - 1,
        // The injected clock (tests move it), read on every check: the
        // default ttlResolution would reuse a reading for 1 ms.
        perf: { now: this.now },
        ttlResolution: 0,
      });
    }
  }

  get schemes(): string[] {
    return [...this.drivers.keys()];
  }

  async fetch(ref: string, signal: AbortSignal, deadline: number | undefined): Promise<FetchedDesign> {
    const redacted = redactReference(ref);
    const problem = designRefProblem(ref, this.schemes);
    if (problem) throw InvalidArgumentError.field("design_ref", problem);
    const url = new URL(ref);
    const scheme = url.protocol.slice(0, -1).toLowerCase();
    const driver = this.drivers.get(scheme)!;

    const hit = this.cache?.get(ref); // a hit becomes the most recently used; a stale entry is dropped
    if (hit) {
      this.o.observer?.cacheHit(scheme);
      this.emit("cacheHit", redacted);
      return { ...hit, fromCache: true };
    }

    const callerDeadline = deadline ?? this.now() + this.o.defaultTimeoutMs;
    // The shared fetch runs (and retries) until the latest deadline of the
    // callers waiting for it, not just the first one's.
    const running = this.inflight.get(ref);
    if (running) running.context.deadline = Math.max(running.context.deadline, callerDeadline);
    const fetched = this.inflight.wait(ref, signal, (shared) => {
      const ctx: FetchContext = { signal: shared, deadline: callerDeadline, maxBytes: this.o.maxBytes };
      this.upstreamFetches++;
      const started = performance.now();
      const observer = this.o.observer;
      const promise = driver.fetch(url, redacted, ctx).then(
        (doc) => {
          observer?.fetched(scheme, "ok", (performance.now() - started) / 1000, doc.content.length);
          const fetched: FetchedDesign = {
            ...doc,
            sha256: createHash("sha256").update(doc.content).digest("hex"),
            fetchedAt: this.now(),
            fromCache: false,
            redacted,
          };
          this.store(ref, fetched);
          return fetched;
        },
        (err: unknown) => {
          observer?.fetched(scheme, err instanceof DomainError ? err.reason : "INTERNAL", (performance.now() - started) / 1000, 0);
          throw err;
        },
      );
      return { promise, context: ctx };
    });
    // Once the caller is counted (wait() does that before its first await).
    if (running) this.emit("fetchJoined", redacted, running.waiters);
    else this.emit("fetchStarted", redacted);
    return fetched;
  }

  /** Least recently used documents go first; one larger than the whole cache is not kept. */
  private store(ref: string, doc: FetchedDesign): void {
    if (!this.cache) return;
    this.cache.set(ref, doc);
    if (this.cache.has(ref)) this.emit("cached", doc.redacted, doc.content.length);
  }
}
