// Counters and histograms for the per-call path. prom-client hashes and
// validates the labels on every observation, and its histogram indexes
// buckets by their bound as an object key (a float turned into a string,
// twice per observation): a CPU profile of GetTask put those at about 20 µs
// a call (BENCHMARKS.md, "Metrics overhead"). Here a child is resolved once
// per label set and then is a few array increments; prom-client's registry
// still formats them (it only needs get()).
import type { Registry } from "prom-client";

type Labels = Record<string, string>;

interface Sample {
  labels: Labels;
  value: number;
  metricName?: string;
}

abstract class Family<C> {
  private readonly children = new Map<string, { labels: Labels; child: C }>();
  /** prom-client's registry, formatter and getSingleMetric() read these. */
  readonly aggregator = "sum";
  abstract readonly type: "counter" | "histogram";

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    registry.registerMetric(this as never);
  }

  /** The child for these labels (every label name must be given); keep it for the hot path. */
  child(labels: Labels): C {
    const key = this.labelNames.map((n) => labels[n]).join("\u0000");
    let c = this.children.get(key);
    if (!c) {
      const own = Object.fromEntries(this.labelNames.map((n) => [n, labels[n]!]));
      c = { labels: own, child: this.make() };
      this.children.set(key, c);
    }
    return c.child;
  }

  protected abstract make(): C;
  protected abstract samples(labels: Labels, child: C): Sample[];

  get(): { name: string; help: string; type: string; aggregator: string; values: Sample[] } {
    const values = [...this.children.values()].flatMap(({ labels, child }) => this.samples(labels, child));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.children.clear();
  }
}

export interface CounterChild {
  inc(n?: number): void;
}

export class FastCounter extends Family<CounterChild & { value: number }> {
  readonly type = "counter";

  protected make() {
    const c = {
      value: 0,
      inc(n = 1) {
        c.value += n;
      },
    };
    return c;
  }

  protected samples(labels: Labels, c: { value: number }): Sample[] {
    return [{ labels, value: c.value }];
  }
}

export interface HistogramChild {
  observe(value: number): void;
}

export class FastHistogram extends Family<HistogramChild & { counts: Float64Array; sum: number; count: number }> {
  readonly type = "histogram";
  private readonly bounds: Float64Array;

  constructor(registry: Registry, name: string, help: string, labelNames: readonly string[], buckets: readonly number[]) {
    super(registry, name, help, labelNames);
    this.bounds = Float64Array.from([...buckets].sort((a, b) => a - b));
  }

  protected make() {
    const bounds = this.bounds;
    const h = {
      counts: new Float64Array(bounds.length + 1), // the last one: above every bound
      sum: 0,
      count: 0,
      observe(v: number) {
        let i = 0;
        while (i < bounds.length && v > bounds[i]!) i++;
        h.counts[i]!++;
        h.sum += v;
        h.count++;
      },
    };
    return h;
  }

  protected samples(labels: Labels, h: { counts: Float64Array; sum: number; count: number }): Sample[] {
    const out: Sample[] = [];
    let acc = 0;
    this.bounds.forEach((b, i) => {
      acc += h.counts[i]!;
      out.push({ labels: { ...labels, le: String(b) }, value: acc, metricName: `${this.name}_bucket` });
    });
    out.push({ labels: { ...labels, le: "+Inf" }, value: h.count, metricName: `${this.name}_bucket` });
    out.push({ labels, value: h.sum, metricName: `${this.name}_sum` });
    out.push({ labels, value: h.count, metricName: `${this.name}_count` });
    return out;
  }
}
