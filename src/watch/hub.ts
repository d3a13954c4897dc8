// The notification hub: the watch path's parts put together (see doc.md).
//
// Contract: one LISTEN connection per process (listener.ts), its task
// notifications coalesced per turn of the event loop and routed to the
// task's feed (feeds.ts) and to the WatchTasks reader (changes.ts), lease
// notifications re-emitted as "lease". After a reconnect every feed re-reads
// from its position and WatchTasks re-reads the tasks changed since the last
// heartbeat heard. The hub is an EventEmitter of WatchSignals.
import { EventEmitter } from "node:events";
import { SYSTEM_CLOCK, type Clock } from "../core/clock.js";
import type { Sql } from "../db/connect.js";
import type { Lease } from "../core/domain.js";
import type { DomainError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { NO_WATCH_COUNTERS, type WatchCounters } from "../metrics/watchCounters.js";
import { LEASE_CHANNEL, TASK_CHANNEL } from "../store/notify.js";
import { TaskChanges } from "./changes.js";
import type { PushStream } from "../contract/push.js";
import { countEnding, countPushEnding } from "./endings.js";
import { TaskFeeds } from "./feeds.js";
import { DEFAULT_WATCH_BYTES, WatchBytes, type WatchByteLimits } from "./budget.js";
import { leaderStream } from "./leaderStream.js";
import { Listener } from "./listener.js";
import { RetryTimer } from "./reads.js";
import type { WatchSignals } from "./signals.js";
import { taskStream, type TaskStreamEvent } from "./taskStream.js";
import { tasksStream, type TasksFilter, type TasksStreamEvent } from "./tasksStream.js";

export interface HubOptions {
  sql: Sql;
  /** URL for the LISTEN connection (normally the pool's). */
  listenUrl: string;
  log: Logger;
  /** Events a watch stream may have queued before it is ended with RESOURCE_EXHAUSTED. */
  bufferLimit: number;
  /** Unsent bytes a WatchTask stream, and all of them together, may hold (budget.ts; default DEFAULT_WATCH_BYTES). */
  bytes?: WatchByteLimits;
  heartbeatMs: number;
  heartbeatTimeoutMs: number;
  /** How long a WatchTask stream stays open after its task finished (0: not at all). */
  finishLingerMs: number;
  counters?: WatchCounters;
  clock?: Clock;
}

/** What every stream is given by its call. */
export interface StreamCall {
  signal: AbortSignal;
  /** Ends the call with this error, even while it waits for a slow client. */
  abort(err: DomainError): void;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * After a reconnect, WatchTasks re-reads tasks changed since the last
 * heartbeat heard, minus this margin: `updated` is a transaction's start
 * time, so a transaction that committed later may carry an earlier time.
 */
const RECONNECT_MARGIN_US = 30_000_000n;

export class WatchHub extends EventEmitter<WatchSignals> {
  private readonly listener: Listener;
  private readonly retries = new RetryTimer();
  private readonly feeds: TaskFeeds;
  private readonly changes: TaskChanges;
  private readonly counters: WatchCounters;
  private readonly clock: Clock;
  /** The byte budget of WatchTask streams: what they hold unsent now. */
  readonly bytes: WatchBytes;
  /** Task ids notified during this turn of the event loop. */
  private readonly notified = new Set<string>();
  private flushScheduled = false;

  constructor(private readonly o: HubOptions) {
    super();
    this.setMaxListeners(0);
    this.counters = o.counters ?? NO_WATCH_COUNTERS;
    this.clock = o.clock ?? SYSTEM_CLOCK;
    const parts = { sql: o.sql, log: o.log, bufferLimit: o.bufferLimit, retries: this.retries, counters: this.counters };
    this.bytes = new WatchBytes(o.bytes ?? DEFAULT_WATCH_BYTES);
    this.feeds = new TaskFeeds({ ...parts, bytes: this.bytes, signals: this });
    this.changes = new TaskChanges(parts);
    this.listener = new Listener({
      url: o.listenUrl,
      sql: o.sql,
      log: o.log,
      heartbeatMs: o.heartbeatMs,
      heartbeatTimeoutMs: o.heartbeatTimeoutMs,
      onNotify: (channel, payload) => this.onNotify(channel, payload),
      signals: this,
      counters: this.counters,
    });
    this.on("listening", (reconnect) => reconnect && this.reconnected());
  }

  start(): Promise<void> {
    return this.listener.start();
  }

  async stop(): Promise<void> {
    this.retries.stop();
    await this.listener.stop();
  }

  /** A WatchTask stream: see taskStream.ts. Throws NotFoundError for an unknown task. */
  taskEvents(call: StreamCall, taskId: string, afterSequence: bigint): PushStream<TaskStreamEvent> {
    const events = taskStream(this.feeds, this.o.sql, { ...call, taskId, afterSequence, lingerMs: this.o.finishLingerMs });
    return countPushEnding("task", this.counters, call.signal, events);
  }

  /** A WatchTasks stream: see tasksStream.ts. */
  changedTasks(call: StreamCall, filter: TasksFilter, sendInitial: boolean): AsyncIterable<TasksStreamEvent> {
    return countEnding("tasks", this.counters, call.signal, tasksStream(this.changes, this.o.sql, { ...call, filter, sendInitial }));
  }

  /** A WatchLeader stream: see leaderStream.ts. */
  leaderChanges(call: StreamCall, election: string): AsyncIterable<Lease | undefined> {
    return countEnding("leader", this.counters, call.signal, leaderStream(this, this.o.sql, this.clock, { ...call, election }));
  }

  private onNotify(channel: string, payload: string): void {
    if (channel === LEASE_CHANNEL) {
      this.emit("lease", payload);
      return;
    }
    // Payloads are task ids; anything else (another tool on our channel) is ignored.
    if (channel !== TASK_CHANNEL || !UUID.test(payload)) return;
    this.notified.add(payload);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Coalesce a burst of notifications into one read per task.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const ids = [...this.notified];
    this.notified.clear();
    for (const id of ids) this.feeds.wake(id);
    this.changes.changed(ids);
  }

  /** Notifications may have been lost while nobody listened. */
  private reconnected(): void {
    this.emit("lease", "*");
    this.feeds.wakeAll();
    const heard = this.listener.lastHeard;
    if (heard !== undefined) this.changes.reconnected(heard - RECONNECT_MARGIN_US);
  }
}
