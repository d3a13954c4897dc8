// The design fetcher: parses a reference, dispatches on its scheme to a
// driver, and caches successes (never failures) in memory, with a TTL and an
// LRU bound on total bytes. Concurrent fetches of one reference share one
// request.
import { createHash } from "node:crypto";
import { DomainError, InvalidArgumentError } from "../core/errors.js";
import { SharedWork } from "../util/sharedWork.js";
import type { DesignDocument, DriverRegistry, FetchContext } from "./driver.js";
import { designRefProblem, redactReference } from "./reference.js";

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
  ttlMs: number;
  cacheMaxBytes: number;
  maxBytes: number;
  /** Used when the call has no deadline. */
  defaultTimeoutMs: number;
  now?: () => number;
}

interface Entry {
  doc: FetchedDesign;
  expiresAt: number;
}

export class DesignFetcher {
  private readonly cache = new Map<string, Entry>(); // insertion order = LRU order
  private cachedBytes = 0;
  /** Fetches in flight: cancelled when no caller is left waiting for one. */
  private readonly inflight = new SharedWork<string, FetchedDesign, FetchContext>({ whenAbandoned: "abort" });
  private readonly now: () => number;
  /** Requests made to sources (cache misses), for metrics and tests. */
  upstreamFetches = 0;

  constructor(
    private readonly drivers: DriverRegistry,
    private readonly o: FetcherOptions,
  ) {
    this.now = o.now ?? Date.now;
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

    const hit = this.cache.get(ref);
    if (hit && hit.expiresAt > this.now()) {
      this.cache.delete(ref); // move to the most recently used end
      this.cache.set(ref, hit);
      this.o.observer?.cacheHit(scheme);
      return { ...hit.doc, fromCache: true };
    }
    if (hit) this.evict(ref);

    const callerDeadline = deadline ?? this.now() + this.o.defaultTimeoutMs;
    // The shared fetch runs (and retries) until the latest deadline of the
    // callers waiting for it, not just the first one's.
    const running = this.inflight.get(ref);
    if (running) running.context.deadline = Math.max(running.context.deadline, callerDeadline);
    return this.inflight.wait(ref, signal, (shared) => {
      const ctx: FetchContext = { signal: shared, deadline: callerDeadline, maxBytes: this.o.maxBytes };
      this.upstreamFetches++;
      const started = performance.now();
      const observer = this.o.observer;
      const promise = driver.fetch(url, redacted, ctx).then((doc) => {
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
      }, (err: unknown) => {
        observer?.fetched(scheme, err instanceof DomainError ? err.reason : "INTERNAL", (performance.now() - started) / 1000, 0);
        throw err;
      });
      return { promise, context: ctx };
    });
  }

  private store(ref: string, doc: FetchedDesign): void {
    const size = doc.content.length;
    if (size > this.o.cacheMaxBytes) return;
    this.evict(ref);
    while (this.cachedBytes + size > this.o.cacheMaxBytes) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.evict(oldest);
    }
    this.cache.set(ref, { doc, expiresAt: this.now() + this.o.ttlMs });
    this.cachedBytes += size;
  }

  private evict(ref: string): void {
    const e = this.cache.get(ref);
    if (!e) return;
    this.cache.delete(ref);
    this.cachedBytes -= e.doc.content.length;
  }
}

