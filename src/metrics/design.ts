// What the design fetcher does: requests to design sources (cache misses)
// by scheme and outcome, their bytes and duration, and cache hits, reported
// through DesignObserver.
import { Counter, Histogram, type Registry } from "prom-client";
import type { DesignObserver } from "../design/fetcher.js";

export class DesignMetrics implements DesignObserver {
  private readonly fetches: Counter<"scheme" | "outcome">;
  private readonly bytes: Counter<"scheme">;
  private readonly hits: Counter<"scheme">;
  private readonly duration: Histogram<"scheme">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.fetches = new Counter({
      name: "statemgmt_design_fetches_total",
      help: "Design documents requested from their sources (cache misses), by scheme and outcome (ok, or the error's reason).",
      labelNames: ["scheme", "outcome"],
      registers,
    });
    this.bytes = new Counter({
      name: "statemgmt_design_fetched_bytes_total",
      help: "Bytes of design documents fetched from their sources.",
      labelNames: ["scheme"],
      registers,
    });
    this.hits = new Counter({ name: "statemgmt_design_cache_hits_total", help: "Design documents served from the cache.", labelNames: ["scheme"], registers });
    this.duration = new Histogram({
      name: "statemgmt_design_fetch_duration_seconds",
      help: "Duration of design fetches from their sources, retries and redirects included, whatever the outcome.",
      labelNames: ["scheme"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
  }

  fetched(scheme: string, outcome: string, seconds: number, bytes: number): void {
    this.fetches.inc({ scheme, outcome });
    this.duration.observe({ scheme }, seconds);
    if (bytes > 0) this.bytes.inc({ scheme }, bytes);
  }

  cacheHit(scheme: string): void {
    this.hits.inc({ scheme });
  }
}
