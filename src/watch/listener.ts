// The process's one LISTEN connection. It listens on the task and heartbeat
// channels, and is replaced (with backoff and jitter) whenever it closes or
// stops hearing its own heartbeats. A replacement listens before the
// connection it replaces is dropped, and notifications of both are passed on
// meanwhile (a duplicate only causes one more read). onListen runs after
// every successful (re)connect, so watchers can re-read whatever they may
// have missed.
import postgres from "postgres";
import { targetSessionAttrs } from "../db/connect.js";
import type { Logger } from "../log.js";
import { HEARTBEAT_CHANNEL, LEASE_CHANNEL, TASK_CHANNEL } from "../store/notify.js";

export const LISTENER_APPLICATION_NAME = "drydock-statemgmt-listen";

export interface ListenerOptions {
  url: string;
  log: Logger;
  onNotify(channel: string, payload: string): void;
  onListen(): void;
}

export class Listener {
  private sql: postgres.Sql | undefined;
  private generation = 0;
  private stopped = false;
  private retries = 0;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ListenerOptions) {}

  /** Resolves once listening for the first time. */
  async start(): Promise<void> {
    await this.connect();
  }

  /** Drops the current connection (if any) and listens on a new one. */
  replace(reason: string): void {
    if (this.stopped) return;
    this.o.log.warn({ reason }, "replacing the LISTEN connection");
    void this.connect().catch(() => this.scheduleRetry());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.generation++;
    await this.sql?.end({ timeout: 1 });
  }

  private async connect(): Promise<void> {
    clearTimeout(this.retryTimer);
    const gen = ++this.generation;
    // The connection being replaced keeps delivering until this one listens.
    const old = this.sql;
    const sql: postgres.Sql = postgres(this.o.url, {
      max: 1,
      idle_timeout: 0,
      max_lifetime: null,
      fetch_types: false,
      connect_timeout: 5,
      // A multi-host URL's read-write must skip standbys (LISTEN fails there).
      ...targetSessionAttrs(this.o.url),
      onnotice: () => {},
      connection: { application_name: LISTENER_APPLICATION_NAME },
      onnotify: (channel: string, payload: string) => {
        if (gen === this.generation || (gen === this.generation - 1 && this.sql === sql)) this.o.onNotify(channel, payload);
      },
      onclose: () => {
        if (gen === this.generation && !this.stopped) {
          this.o.log.warn("LISTEN connection closed");
          this.scheduleRetry();
        }
      },
      // onnotify is a supported postgres.js option missing from its typings.
    } as postgres.Options<{}>);
    try {
      await sql`listen ${sql(TASK_CHANNEL)}`;
      await sql`listen ${sql(LEASE_CHANNEL)}`;
      await sql`listen ${sql(HEARTBEAT_CHANNEL)}`;
    } catch (err) {
      void sql.end({ timeout: 0 }).catch(() => {});
      if (gen === this.generation) this.o.log.warn({ err: String(err) }, "LISTEN failed");
      throw err;
    }
    if (gen !== this.generation || this.stopped) {
      void sql.end({ timeout: 0 }).catch(() => {});
      return;
    }
    this.sql = sql;
    if (old !== undefined && old !== sql) void old.end({ timeout: 0 }).catch(() => {});
    this.retries = 0;
    this.o.log.debug("listening");
    this.o.onListen();
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    // Exponential backoff from 50 ms to 1 s, with full jitter so that many
    // replicas losing the same database do not reconnect in lockstep; capped
    // low because watchers wait for this connection after a database restart.
    const cap = Math.min(1000, 50 * 2 ** this.retries++);
    const delay = Math.random() * cap;
    this.retryTimer = setTimeout(() => void this.connect().catch(() => this.scheduleRetry()), delay);
    this.retryTimer.unref();
  }
}
