// grpc.health.v1.Health: SERVING only while the database answers and accepts
// writes. A read-only session (a standby, or a primary fenced with
// default_transaction_read_only) answers reads but refuses every write, so
// the server is taken out of rotation until a writable primary is back.
// With Keystone validating tokens, "keystone" is an entry of its own
// (KeystoneHealth), which leaves "" and the StateService entry alone.
import { EventEmitter, once } from "node:events";
import type { Sql } from "../db/connect.js";
import { HealthCheckResponse_ServingStatus as Status, type Health } from "../../gen/grpc/health/v1/health_pb.js";
import type { ServiceImpl } from "../contract/contract.js";
import type { Logger } from "../core/log.js";
import { NotFoundError } from "../core/errors.js";
import { probeWritable } from "../store/probe.js";
import { SharedWork } from "../util/sharedWork.js";

type Methods = typeof Health extends { method: infer M } ? M : never;

/** Services this server reports on; "" is the server as a whole. */
const KNOWN = new Set(["", "drydock.statemgmt.v1.StateService"]);

/**
 * The health entry of Keystone, when callers' tokens are validated by it: its
 * own status, so a Keystone outage shows without taking the replica out of
 * rotation ("" and the StateService entry follow the database only).
 */
export const KEYSTONE_HEALTH_SERVICE = "keystone";

/** What a health entry reads: a status, "change" events, and a probe a Check may ask for. */
interface HealthSource extends EventEmitter {
  status: Status;
  /** The status a Check answers. */
  check(): Promise<Status>;
}

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
  /** One probe at a time, run to its own timeout whoever waits for it. */
  private readonly probes = new SharedWork<"probe", Status>({ whenAbandoned: "finish" });
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

  check(): Promise<Status> {
    return this.probe();
  }

  /** One probe at a time; concurrent callers share it. */
  probe(): Promise<Status> {
    if (this.stopped) return Promise.resolve(this.status);
    return this.probes.wait("probe", undefined, () => ({ promise: this.probeOnce(), context: undefined }));
  }

  /** One probe of the database, settled within its timeout. */
  private async probeOnce(): Promise<Status> {
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
  }

  private set(s: Status): void {
    if (s === this.status) return;
    this.status = s;
    this.log.info({ status: Status[s] }, "health changed");
    this.emit("change", s);
  }
}

/** Keystone probe interval while it answers (failed validations report an outage at once, between probes). */
export const KEYSTONE_PROBE_MS = 30_000;

/**
 * Whether Keystone can validate callers' tokens: SERVING while it answers,
 * NOT_SERVING while it does not (UNKNOWN until the first answer). Learnt from
 * every validation of a caller's token, and from a probe (the service's own
 * token validated) every KEYSTONE_PROBE_MS, or every `recoveryMs` while it
 * does not answer. A Check reads the status and never sends a request to
 * Keystone: anyone may call Check.
 */
export class KeystoneHealth extends EventEmitter {
  status: Status = Status.UNKNOWN;
  private timer: NodeJS.Timeout | undefined;
  private probing = false;
  private stopped = false;

  constructor(
    private readonly keystone: { check(): Promise<boolean>; onReachable: ((reachable: boolean) => void) | undefined },
    private readonly recoveryMs: number,
    private readonly log: Logger,
    private readonly intervalMs = KEYSTONE_PROBE_MS,
  ) {
    super();
    this.setMaxListeners(0);
    keystone.onReachable = (ok) => this.set(ok);
  }

  /** Starts probing; the first probe runs at once, in the background (start-up does not wait for Keystone). */
  start(): void {
    void this.tick();
  }

  private async tick(): Promise<void> {
    this.probing = true;
    const ok = await this.keystone.check();
    this.probing = false;
    if (this.stopped) return;
    this.set(ok);
    this.schedule();
  }

  /** The next probe: soon while Keystone does not answer, KEYSTONE_PROBE_MS while it does. */
  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), this.status === Status.SERVING ? this.intervalMs : Math.min(this.intervalMs, this.recoveryMs));
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.keystone.onReachable = undefined;
    this.setStatus(Status.NOT_SERVING);
  }

  async check(): Promise<Status> {
    return this.status;
  }

  private set(ok: boolean): void {
    if (this.stopped) return;
    const s = ok ? Status.SERVING : Status.NOT_SERVING;
    if (s === this.status) return;
    if (s === Status.NOT_SERVING)
      this.log.warn("Keystone does not answer: calls with tokens not validated before are refused (UNAVAILABLE KEYSTONE_UNAVAILABLE)");
    else this.log.info("Keystone answers");
    this.setStatus(s);
    // Learnt from a validation between probes: the next probe comes at the new status's interval.
    if (!this.probing && this.timer !== undefined) this.schedule();
  }

  private setStatus(s: Status): void {
    if (s === this.status) return;
    this.status = s;
    this.log.info({ service: KEYSTONE_HEALTH_SERVICE, status: Status[s] }, "health changed");
    this.emit("change", s);
  }
}

/** `keystone`: the health of Keystone, when tokens are validated by it (then "keystone" is a known service). */
export function healthRpcs(health: DatabaseHealth, keystone?: KeystoneHealth): ServiceImpl<Methods> {
  const sourceOf = (service: string): HealthSource | undefined =>
    KNOWN.has(service) ? health : keystone && service === KEYSTONE_HEALTH_SERVICE ? keystone : undefined;
  return {
    async check(req) {
      const source = sourceOf(req.service);
      if (!source) throw new NotFoundError("Service", req.service, `unknown service "${req.service}"`);
      return { status: await source.check() };
    },
    async *watch(req, { signal }) {
      const source = sourceOf(req.service);
      if (!source) {
        yield { status: Status.SERVICE_UNKNOWN };
        await once(signal, "abort").catch(() => {});
        return;
      }
      const health = source;
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
