// grpc.health.v1.Health: SERVING only while the database answers and accepts
// writes. A read-only session (a standby, or a primary fenced with
// default_transaction_read_only) answers reads but refuses every write, so
// the server is taken out of rotation until a writable primary is back.
import { EventEmitter, once } from "node:events";
import type { Sql } from "../db/connect.js";
import { HealthCheckResponse_ServingStatus as Status, type Health } from "../../gen/grpc/health/v1/health_pb.js";
import type { ServiceImpl } from "../contract.js";
import type { Logger } from "../log.js";
import { NotFoundError } from "../errors.js";
import { probeWritable } from "../store/probe.js";

type Methods = typeof Health extends { method: infer M } ? M : never;

/** Services this server reports on; "" is the server as a whole. */
const KNOWN = new Set(["", "drydock.statemgmt.v1.StateService"]);

/** Probe interval while the database is not answering. */
export const RECOVERY_PROBE_MS = 250;

/**
 * How long a probe may take while the database is not answering. A stopping
 * PostgreSQL leaves connection attempts in its listen backlog, unanswered
 * until the connect timeout (2 s); a probe waiting on one must not hold up
 * the next, which takes another connection.
 */
export const RECOVERY_PROBE_TIMEOUT_MS = 250;

/** Probes the database on an interval and whenever asked; emits "change". */
export class DatabaseHealth extends EventEmitter {
  status: Status = Status.UNKNOWN;
  private timer: NodeJS.Timeout | undefined;
  private inflight: Promise<Status> | undefined;
  private stopped = false;

  constructor(
    private readonly sql: Sql,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {
    super();
    this.setMaxListeners(0);
  }

  start(): Promise<Status> {
    // While the database is down, probe often: the server reports SERVING
    // within RECOVERY_PROBE_MS of the database accepting connections again.
    const tick = () => {
      const delay = this.status === Status.SERVING ? this.intervalMs : Math.min(this.intervalMs, RECOVERY_PROBE_MS);
      this.timer = setTimeout(() => void this.probe().finally(() => this.stopped || tick()), delay);
      this.timer.unref();
    };
    tick();
    return this.probe();
  }

  /** Marks the server NOT_SERVING for good (shutdown). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.set(Status.NOT_SERVING);
  }

  /** One probe at a time; concurrent callers share it. */
  probe(): Promise<Status> {
    if (this.stopped) return Promise.resolve(this.status);
    this.inflight ??= (async () => {
      let ok = false;
      const probe = probeWritable(this.sql);
      let timer: NodeJS.Timeout | undefined;
      // A probe always settles: the timeout decides on its own.
      const limitMs = Math.min(this.intervalMs, this.status === Status.NOT_SERVING ? RECOVERY_PROBE_TIMEOUT_MS : 2000);
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("database probe timed out")), limitMs);
      });
      try {
        ok = await Promise.race([probe, timeout]);
        if (!ok && this.status !== Status.NOT_SERVING) this.log.warn("the database is read-only: writes are refused until a writable primary answers");
      } catch (err) {
        if (this.status !== Status.NOT_SERVING) this.log.warn({ err: String(err) }, "database health probe failed");
        probe.catch(() => {}); // settles later, or never; either way unobserved
      } finally {
        clearTimeout(timer);
      }
      if (!this.stopped) this.set(ok ? Status.SERVING : Status.NOT_SERVING);
      return this.status;
    })().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private set(s: Status): void {
    if (s === this.status) return;
    this.status = s;
    this.log.info({ status: Status[s] }, "health changed");
    this.emit("change", s);
  }
}

export function healthRpcs(health: DatabaseHealth): ServiceImpl<Methods> {
  return {
    async check(req) {
      if (!KNOWN.has(req.service)) throw new NotFoundError("Service", req.service, `unknown service "${req.service}"`);
      return { status: await health.probe() };
    },
    async *watch(req, { signal }) {
      if (!KNOWN.has(req.service)) {
        yield { status: Status.SERVICE_UNKNOWN };
        await once(signal, "abort").catch(() => {});
        return;
      }
      let last = health.status;
      yield { status: last };
      for (;;) {
        try {
          await once(health, "change", { signal });
        } catch {
          return; // the call is over
        }
        if (health.status !== last) {
          last = health.status;
          yield { status: last };
        }
      }
    },
  };
}
