// The notification hub: one LISTEN connection per process, fanned out in
// memory to every watch stream. See doc.md beside this file.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Sql } from "../db/connect.js";
import type { Micros } from "../db/time.js";
import type { ResultMessage, Task } from "../domain.js";
import type { Logger } from "../log.js";
import { messagesHighestSequence, messagesList } from "../store/messages.js";
import { HEARTBEAT_CHANNEL, LEASE_CHANNEL, TASK_CHANNEL } from "../store/notify.js";
import { dbNow, tasksChangedSince, tasksGetById, tasksGetByIds } from "../store/tasks.js";
import { Listener } from "./listener.js";
import { BoundedQueue } from "./queue.js";
import { NotFoundError } from "../errors.js";

export type TaskEvent = { kind: "task"; task: Task } | { kind: "message"; message: ResultMessage } | { kind: "gone" };

/** One task's shared reader: one read per wake-up, whatever the number of watchers. */
interface TaskFeed {
  taskId: string;
  /** Highest sequence read by the feed; everything up to it is committed. */
  highest: bigint;
  task: Task;
  queues: Set<BoundedQueue<TaskEvent>>;
  reading: boolean;
  dirty: boolean;
}

export interface FeedSubscription {
  /** The task as the feed last read it. */
  task: Task;
  /** The feed's highest sequence when the subscription began. */
  highest: bigint;
  events: BoundedQueue<TaskEvent>;
  close(): void;
}

export interface TasksSubscription {
  events: BoundedQueue<Task>;
  close(): void;
}

export interface HubOptions {
  sql: Sql;
  /** URL for the LISTEN connection (normally the pool's). */
  listenUrl: string;
  log: Logger;
  /** Events a watch stream may have queued before it is ended with RESOURCE_EXHAUSTED. */
  bufferLimit: number;
  heartbeatMs: number;
  heartbeatTimeoutMs: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Messages read per query by a feed. */
const READ_BATCH = 1000;
/**
 * After a reconnect, WatchTasks re-reads tasks changed since the last heartbeat
 * that came back, minus this margin: `updated` is a transaction's start time,
 * so a transaction that committed later may carry an earlier time.
 */
const RECONNECT_MARGIN_US = 30_000_000n;

/**
 * Emits "listening" after every (re)connect of the LISTEN connection,
 * "heartbeat" after every heartbeat heard (tests wait on these), and
 * "lease" with an election name when a lease changed ("*" after a
 * reconnect: any may have).
 */
export class WatchHub extends EventEmitter {
  private readonly feeds = new Map<string, Promise<TaskFeed>>();
  private readonly taskSubs = new Set<BoundedQueue<Task>>();
  private readonly pending = new Set<string>();
  private flushScheduled = false;
  private readonly heartbeats = new Map<string, () => void>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private lastGood: Micros | undefined;
  private readonly listener: Listener;
  private everListened = false;

  constructor(private readonly o: HubOptions) {
    super();
    this.setMaxListeners(0);
    this.listener = new Listener({
      url: o.listenUrl,
      log: o.log,
      onNotify: (channel, payload) => this.onNotify(channel, payload),
      onListen: () => this.onListen(),
    });
  }

  async start(): Promise<void> {
    this.lastGood = await dbNow(this.o.sql);
    await this.listener.start();
    const tick = () => {
      this.heartbeatTimer = setTimeout(() => void this.heartbeat().finally(() => this.heartbeatTimer && tick()), this.o.heartbeatMs);
      this.heartbeatTimer.unref();
    };
    tick();
  }

  async stop(): Promise<void> {
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    await this.listener.stop();
  }

  private readonly subscribers = new Map<string, number>();

  /** Number of open feeds (tasks being watched). */
  get watchedTasks(): number {
    return this.feeds.size;
  }

  /** Number of WatchTask subscriptions of one task (for tests and metrics). */
  subscriberCount(taskId: string): number {
    return this.subscribers.get(taskId) ?? 0;
  }

  /**
   * Subscribes to one task's events. Throws NotFoundError for an unknown task.
   * Events queued before close() are the caller's to drain or drop.
   */
  async subscribeTask(taskId: string, signal?: AbortSignal): Promise<FeedSubscription> {
    let p = this.feeds.get(taskId);
    if (!p) {
      p = this.openFeed(taskId, signal);
      this.feeds.set(taskId, p);
      p.catch(() => this.feeds.delete(taskId));
    }
    const feed = await p;
    const events = new BoundedQueue<TaskEvent>(this.o.bufferLimit);
    feed.queues.add(events);
    this.subscribers.set(taskId, this.subscriberCount(taskId) + 1);
    let closed = false;
    return {
      task: feed.task,
      highest: feed.highest,
      events,
      close: () => {
        if (closed) return;
        closed = true;
        const n = this.subscriberCount(taskId) - 1;
        if (n > 0) this.subscribers.set(taskId, n);
        else this.subscribers.delete(taskId);
        feed.queues.delete(events);
        if (feed.queues.size === 0 && this.feeds.get(taskId) === p) this.feeds.delete(taskId);
      },
    };
  }

  /** Subscribes to snapshots of every task that changes (the caller filters). */
  subscribeTasks(): TasksSubscription {
    const events = new BoundedQueue<Task>(this.o.bufferLimit);
    this.taskSubs.add(events);
    return { events, close: () => this.taskSubs.delete(events) };
  }

  private async openFeed(taskId: string, signal?: AbortSignal): Promise<TaskFeed> {
    // The snapshot first, then the position: every message committed before
    // the snapshot's state is at or below `highest`.
    const task = await tasksGetById(this.o.sql, { taskId, signal });
    const highest = await messagesHighestSequence(this.o.sql, { taskId, signal });
    if (highest === null) throw new NotFoundError("Task", taskId);
    return { taskId, highest, task, queues: new Set(), reading: false, dirty: false };
  }

  private onNotify(channel: string, payload: string): void {
    if (channel === HEARTBEAT_CHANNEL) {
      this.heartbeats.get(payload)?.();
      return;
    }
    if (channel === LEASE_CHANNEL) {
      this.emit("lease", payload);
      return;
    }
    // Payloads are task ids; anything else (another tool on our channel) is ignored.
    if (channel !== TASK_CHANNEL || !UUID.test(payload)) return;
    this.pending.add(payload);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Coalesce a burst of notifications into one read per task.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const ids = [...this.pending];
    this.pending.clear();
    for (const id of ids) {
      const p = this.feeds.get(id);
      if (p) void p.then((f) => this.wake(f), () => {});
    }
    if (this.taskSubs.size) void this.publishTasks(ids);
  }

  private onListen(): void {
    const reconnect = this.everListened;
    this.everListened = true;
    this.emit("listening");
    if (!reconnect) return;
    this.emit("lease", "*");
    // Notifications may have been lost while we were not listening: every
    // feed re-reads from its cursor, and WatchTasks re-reads recent changes.
    for (const p of this.feeds.values()) void p.then((f) => this.wake(f), () => {});
    if (this.taskSubs.size && this.lastGood !== undefined) {
      const since = this.lastGood - RECONNECT_MARGIN_US;
      void tasksChangedSince(this.o.sql, { since }).then(
        (ids) => this.publishTasks(ids),
        (err) => this.o.log.error({ err }, "re-reading changed tasks after reconnect failed"),
      );
    }
  }

  private async publishTasks(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    try {
      for (let i = 0; i < ids.length; i += READ_BATCH) {
        const tasks = await tasksGetByIds(this.o.sql, { taskIds: ids.slice(i, i + READ_BATCH) });
        for (const q of this.taskSubs) q.push(tasks);
      }
    } catch (err) {
      this.o.log.error({ err }, "reading changed tasks for WatchTasks failed");
    }
  }

  /** Reads what is new for a feed once, and hands it to every subscriber. */
  private async wake(feed: TaskFeed): Promise<void> {
    if (feed.reading) {
      feed.dirty = true;
      return;
    }
    feed.reading = true;
    try {
      do {
        feed.dirty = false;
        let task: Task;
        try {
          task = await tasksGetById(this.o.sql, { taskId: feed.taskId });
        } catch (err) {
          if (!(err instanceof NotFoundError)) throw err;
          for (const q of feed.queues) q.push([{ kind: "gone" }]);
          return;
        }
        // The snapshot first, then the messages: every message committed
        // before the snapshot's state is then in this read.
        for (;;) {
          const batch = await messagesList(this.o.sql, {
            taskId: feed.taskId,
            afterSequence: feed.highest,
            errorsOnly: false,
            limit: READ_BATCH,
          });
          // Each batch is pushed as it is read (a queue's limit counts what its
          // stream has not taken yet, not the size of one wake), the snapshot
          // with the last one. `highest` moves only once the batch is pushed.
          const last = batch.length < READ_BATCH;
          const events: TaskEvent[] = batch.map((message) => ({ kind: "message", message }));
          if (last) events.push({ kind: "task", task });
          for (const q of feed.queues) q.push(events);
          if (batch.length) feed.highest = batch[batch.length - 1]!.sequence;
          if (last) break;
        }
        feed.task = task;
      } while (feed.dirty);
    } catch (err) {
      this.o.log.error({ err, taskId: feed.taskId }, "watch feed read failed; retrying after the next notification or reconnect");
    } finally {
      feed.reading = false;
    }
  }

  private async heartbeat(): Promise<void> {
    const nonce = randomUUID();
    let heard!: () => void;
    const got = new Promise<boolean>((resolve) => (heard = () => resolve(true)));
    this.heartbeats.set(nonce, heard);
    try {
      let now: Micros;
      try {
        const [row] = await this.o.sql<{ now: Micros }[]>`select pg_notify(${HEARTBEAT_CHANNEL}, ${nonce}), now() as now`;
        now = row!.now;
      } catch {
        return; // the database is down; the listener reconnects on its own
      }
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.o.heartbeatTimeoutMs)));
      const ok = await Promise.race([got, late]);
      clearTimeout(timer);
      if (ok) {
        this.lastGood = now;
        this.emit("heartbeat");
      } else {
        this.listener.replace(`heartbeat not heard within ${this.o.heartbeatTimeoutMs} ms`);
      }
    } finally {
      this.heartbeats.delete(nonce);
    }
  }
}
