// The process's one LISTEN connection and its liveness.
//
// Contract:
// - listens on the task, lease and heartbeat channels, and passes every task
//   and lease notification to onNotify;
// - is replaced, with backoff and jitter, when it closes or when one of its
//   own heartbeats (sent through the pool every heartbeatMs) goes unheard
//   for heartbeatTimeoutMs. The timeout is judged only after the event loop
//   has read its sockets, so a stalled loop does not condemn a live connection;
// - a replacement listens before the connection it replaces is dropped, and
//   both deliver meanwhile (a duplicate only causes one more read); each
//   connection has a generation, and events of older ones are ignored;
// - emits "listening" after every successful (re)connect, so readers re-read
//   whatever they may have missed, and "heartbeat" for each heartbeat heard.
import { randomUUID } from "node:crypto";
import type { EventEmitter } from "node:events";
import { setImmediate as nextTurn } from "node:timers/promises";
import postgres from "postgres";
import { Backoff } from "../util/backoff.js";
import { targetSessionAttrs, type Sql } from "../db/connect.js";
import type { Micros } from "../core/time.js";
import type { Logger } from "../core/log.js";
import type { WatchCounters } from "../metrics/watchCounters.js";
import { HEARTBEAT_CHANNEL, LEASE_CHANNEL, notifyHeartbeat, TASK_CHANNEL } from "../store/notify.js";
import { dbNow } from "../store/tasks.js";
import type { WatchSignals } from "./signals.js";

export const LISTENER_APPLICATION_NAME = "drydock-statemgmt-listen";

export interface ListenerOptions {
  url: string;
  /** The pool heartbeats are sent through. */
  sql: Sql;
  log: Logger;
  heartbeatMs: number;
  heartbeatTimeoutMs: number;
  onNotify(channel: string, payload: string): void;
  signals: EventEmitter<WatchSignals>;
  counters: WatchCounters;
}

export class Listener {
  private connection: postgres.Sql | undefined;
  private generation = 0;
  private everListened = false;
  private stopped = false;
  /** Reconnects after a close: 50 ms doubling to 1 s, full jitter (watchers wait for this connection). */
  private readonly backoff = new Backoff({ initialMs: 50, maxMs: 1000, jitter: 1 });
  private retryTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** Heartbeats in flight, by nonce. */
  private readonly pings = new Map<string, () => void>();
  private heardAt: Micros | undefined;

  constructor(private readonly o: ListenerOptions) {}

  /**
   * The database's time of the last heartbeat heard (or of start()): every
   * notification sent before it has been delivered to onNotify.
   */
  get lastHeard(): Micros | undefined {
    return this.heardAt;
  }

  /** Resolves once listening for the first time; then heartbeats begin. */
  async start(): Promise<void> {
    this.heardAt = await dbNow(this.o.sql);
    await this.connect();
    this.scheduleHeartbeat();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.heartbeatTimer);
    this.generation++;
    await this.connection?.end({ timeout: 1 });
  }

  /** Listens on a new connection, then drops the current one. */
  replace(reason: string): void {
    if (this.stopped) return;
    this.o.log.warn({ reason }, "replacing the LISTEN connection");
    this.o.signals.emit("replacing", reason);
    void this.connect().catch(() => this.scheduleRetry());
  }

  private async connect(): Promise<void> {
    clearTimeout(this.retryTimer);
    const generation = ++this.generation;
    const previous = this.connection;
    const connection: postgres.Sql = postgres(this.o.url, {
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
        // This connection, or the one it replaces until it is dropped.
        if (generation === this.generation || (generation === this.generation - 1 && this.connection === connection)) this.notified(channel, payload);
      },
      onclose: () => {
        if (generation === this.generation && !this.stopped) {
          this.o.log.warn("LISTEN connection closed");
          this.scheduleRetry();
        }
      },
      // onnotify is a supported postgres.js option missing from its typings.
    } as postgres.Options<Record<string, never>>);
    try {
      await connection`listen ${connection(TASK_CHANNEL)}`;
      await connection`listen ${connection(LEASE_CHANNEL)}`;
      await connection`listen ${connection(HEARTBEAT_CHANNEL)}`;
    } catch (err) {
      void connection.end({ timeout: 0 }).catch(() => {});
      if (generation === this.generation) this.o.log.warn({ err: String(err) }, "LISTEN failed");
      throw err;
    }
    if (generation !== this.generation || this.stopped) {
      void connection.end({ timeout: 0 }).catch(() => {});
      return;
    }
    this.connection = connection;
    if (previous !== undefined && previous !== connection) void previous.end({ timeout: 0 }).catch(() => {});
    this.backoff.reset();
    const reconnect = this.everListened;
    this.everListened = true;
    if (reconnect) this.o.counters.listenReconnected();
    this.o.log.debug("listening");
    this.o.signals.emit("listening", reconnect);
  }

  private notified(channel: string, payload: string): void {
    this.o.counters.notificationReceived(channel === TASK_CHANNEL ? "tasks" : channel === LEASE_CHANNEL ? "leases" : "heartbeat");
    if (channel === HEARTBEAT_CHANNEL) this.pings.get(payload)?.();
    else this.o.onNotify(channel, payload);
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect().catch(() => this.scheduleRetry()), this.backoff.next());
    this.retryTimer.unref();
  }

  private scheduleHeartbeat(): void {
    if (this.stopped) return;
    this.heartbeatTimer = setTimeout(() => void this.heartbeat().finally(() => this.scheduleHeartbeat()), this.o.heartbeatMs);
    this.heartbeatTimer.unref();
  }

  /** Sends one heartbeat and replaces the connection unless it comes back in time. */
  private async heartbeat(): Promise<void> {
    const nonce = randomUUID();
    let heard = false;
    let onHeard!: () => void;
    const back = new Promise<void>((resolve) => (onHeard = resolve));
    this.pings.set(nonce, () => {
      heard = true;
      onHeard();
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      let sentAt: Micros;
      try {
        sentAt = await notifyHeartbeat(this.o.sql, { nonce });
      } catch {
        return; // the database is down; the connection reconnects on its own
      }
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.o.heartbeatTimeoutMs)));
      this.o.signals.emit("heartbeatSent");
      await Promise.race([back, late]);
      // A timer that fired after a stall of the event loop runs before the
      // sockets are read: let them be, then judge.
      if (!heard) await nextTurn();
      if (heard) {
        this.heardAt = sentAt;
        this.o.signals.emit("heartbeat");
      } else {
        this.o.counters.heartbeatReplaced();
        this.replace(`heartbeat not heard within ${this.o.heartbeatTimeoutMs} ms`);
      }
    } finally {
      clearTimeout(timer);
      this.pings.delete(nonce);
    }
  }
}
