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
import { abortable } from "../abortable.js";
import { NotFoundError, UnavailableError } from "../errors.js";

export type TaskEvent = { kind: "task"; task: Task } | { kind: "message"; message: ResultMessage } | { kind: "gone" };

/** One task's shared reader: one read per wake-up, whatever the number of watchers. */
interface TaskFeed {
  taskId: string;
  /** Highest sequence read by the feed; everything up to it is committed. */
  highest: bigint;
  task: Task;
  queues: Set<BoundedQueue<TaskEvent>>;
  reading: boolean;
  /** Something may have changed since the read in progress began. */
  dirty: boolean;
  /** A read failed; the hub's retry timer reads again. */
  failed: boolean;
  /** No subscriber is left; nothing reads for this feed any more. */
  closed: boolean;
}

/** A feed in the map: opening (shared by everyone waiting for it), then open. */
interface FeedEntry {
  opening: Promise<TaskFeed>;
  /** Subscribers still waiting for `opening`. */
  waiting: number;
  feed?: TaskFeed;
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
 * Bound of one shared query (feed and WatchTasks reads): past it the query is
 * cancelled and abandoned, and retried like any failed read.
 */
export const SHARED_QUERY_TIMEOUT_MS = 30_000;
/** Failed shared reads are retried with exponential backoff between these, with jitter. */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;

/**
 * Runs one shared query under a signal of its own (never a caller's) that
 * aborts after `ms`; settles by then even if the query does not.
 */
async function bounded<T>(ms: number, query: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new UnavailableError(`a watch read took longer than ${ms} ms`);
      ac.abort(err);
      reject(err);
    }, ms);
    timer.unref();
  });
  try {
    return await Promise.race([query(ac.signal), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Emits "listening" after every (re)connect of the LISTEN connection,
 * "heartbeat" after every heartbeat heard (tests wait on these), and
 * "lease" with an election name when a lease changed ("*" after a
 * reconnect: any may have).
 */
export class WatchHub extends EventEmitter {
  private readonly feeds = new Map<string, FeedEntry>();
  private readonly taskSubs = new Set<BoundedQueue<Task>>();
  private readonly pending = new Set<string>();
  private flushScheduled = false;
  private readonly heartbeats = new Map<string, () => void>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private lastGood: Micros | undefined;
  private readonly listener: Listener;
  private everListened = false;
  private stopped = false;
  /** Task ids whose snapshots WatchTasks subscribers still need, and a reconnect's re-read. */
  private readonly tasksPending = new Set<string>();
  private tasksSince: Micros | undefined;
  private tasksReading = false;
  private tasksFailed = false;
  /** Feeds whose last read failed, read again when the retry timer fires. */
  private readonly failedFeeds = new Set<TaskFeed>();
  private retryTimer: NodeJS.Timeout | undefined;
  private retryAttempt = 0;

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
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
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

  /** Number of WatchTask calls waiting for the task's feed to open (for tests). */
  waitingForFeed(taskId: string): number {
    return this.feeds.get(taskId)?.waiting ?? 0;
  }

  /**
   * Subscribes to one task's events. Throws NotFoundError for an unknown task.
   * Events queued before close() are the caller's to drain or drop.
   *
   * The feed is opened once for everyone who asks while it opens, under the
   * hub's own signal: `signal` abandons only this caller's wait, never the
   * opening others wait for.
   */
  async subscribeTask(taskId: string, signal?: AbortSignal): Promise<FeedSubscription> {
    let entry = this.feeds.get(taskId);
    if (!entry) {
      const e: FeedEntry = { opening: this.openFeed(taskId), waiting: 0 };
      this.feeds.set(taskId, e);
      e.opening.then(
        (feed) => {
          e.feed = feed;
          this.release(taskId, e); // everyone who waited may have left
        },
        () => {
          if (this.feeds.get(taskId) === e) this.feeds.delete(taskId);
        },
      );
      entry = e;
    }
    const e = entry;
    e.waiting++;
    let feed: TaskFeed;
    try {
      feed = await abortable(e.opening, signal);
    } catch (err) {
      e.waiting--;
      this.release(taskId, e);
      throw err;
    }
    e.waiting--;
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
        this.release(taskId, e);
      },
    };
  }

  /** Closes an open feed nobody subscribes to or waits for. */
  private release(taskId: string, e: FeedEntry): void {
    const feed = e.feed;
    if (!feed || feed.queues.size > 0 || e.waiting > 0 || this.feeds.get(taskId) !== e) return;
    this.feeds.delete(taskId);
    feed.closed = true;
    this.failedFeeds.delete(feed);
  }

  /** Subscribes to snapshots of every task that changes (the caller filters). */
  subscribeTasks(): TasksSubscription {
    const events = new BoundedQueue<Task>(this.o.bufferLimit);
    this.taskSubs.add(events);
    return { events, close: () => this.taskSubs.delete(events) };
  }

  private async openFeed(taskId: string): Promise<TaskFeed> {
    // The snapshot first, then the position: every message committed before
    // the snapshot's state is at or below `highest`.
    const task = await bounded(SHARED_QUERY_TIMEOUT_MS, (signal) => tasksGetById(this.o.sql, { taskId, signal }));
    const highest = await bounded(SHARED_QUERY_TIMEOUT_MS, (signal) => messagesHighestSequence(this.o.sql, { taskId, signal }));
    if (highest === null) throw new NotFoundError("Task", taskId);
    return { taskId, highest, task, queues: new Set(), reading: false, dirty: false, failed: false, closed: false };
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
      const e = this.feeds.get(id);
      if (e) void e.opening.then((f) => this.wake(f), () => {});
    }
    if (this.taskSubs.size) this.publishTasks(ids);
  }

  private onListen(): void {
    const reconnect = this.everListened;
    this.everListened = true;
    this.emit("listening");
    if (!reconnect) return;
    this.emit("lease", "*");
    // Notifications may have been lost while we were not listening: every
    // feed re-reads from its cursor, and WatchTasks re-reads recent changes.
    for (const e of this.feeds.values()) void e.opening.then((f) => this.wake(f), () => {});
    if (this.taskSubs.size && this.lastGood !== undefined) {
      const since = this.lastGood - RECONNECT_MARGIN_US;
      if (this.tasksSince === undefined || since < this.tasksSince) this.tasksSince = since;
      void this.readTasks();
    }
  }

  /** Sends the current snapshots of these tasks to every WatchTasks subscriber. */
  private publishTasks(ids: string[]): void {
    for (const id of ids) this.tasksPending.add(id);
    void this.readTasks();
  }

  /**
   * Reads what WatchTasks subscribers wait for, one read at a time. A failed
   * read keeps its ids (and a reconnect's re-read) pending for the retry
   * timer; nothing is dropped while anyone subscribes.
   */
  private async readTasks(): Promise<void> {
    if (this.tasksReading || this.tasksFailed) return;
    this.tasksReading = true;
    let ids: string[] = [];
    let since: Micros | undefined;
    try {
      while (this.taskSubs.size > 0) {
        since = this.tasksSince;
        this.tasksSince = undefined;
        if (since !== undefined) {
          const s = since;
          for (const id of await bounded(SHARED_QUERY_TIMEOUT_MS, (signal) => tasksChangedSince(this.o.sql, { since: s, signal }))) {
            this.tasksPending.add(id);
          }
          since = undefined;
        }
        if (this.tasksPending.size === 0) break;
        ids = [...this.tasksPending].slice(0, READ_BATCH);
        for (const id of ids) this.tasksPending.delete(id);
        const taskIds = ids;
        const tasks = await bounded(SHARED_QUERY_TIMEOUT_MS, (signal) => tasksGetByIds(this.o.sql, { taskIds, signal }));
        ids = [];
        for (const q of this.taskSubs) q.push(tasks);
        this.succeeded();
      }
      if (this.taskSubs.size === 0) {
        // Nobody to tell; a new subscriber reads its initial set itself.
        this.tasksPending.clear();
        this.tasksSince = undefined;
      }
    } catch (err) {
      for (const id of ids) this.tasksPending.add(id);
      if (since !== undefined && (this.tasksSince === undefined || since < this.tasksSince)) this.tasksSince = since;
      this.tasksFailed = true;
      this.o.log.warn({ err, attempt: this.retryAttempt }, "reading changed tasks for WatchTasks failed; retrying");
      this.retryLater();
    } finally {
      this.tasksReading = false;
    }
  }

  /** Schedules the retry of every failed read (feeds and WatchTasks), with backoff. */
  private retryLater(): void {
    if (this.stopped || this.retryTimer) return;
    const cap = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** this.retryAttempt++);
    const delay = cap / 2 + (Math.random() * cap) / 2;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const feeds = [...this.failedFeeds];
      this.failedFeeds.clear();
      for (const f of feeds) {
        f.failed = false;
        if (!f.closed) void this.wake(f);
      }
      if (this.tasksFailed) {
        this.tasksFailed = false;
        void this.readTasks();
      }
    }, delay);
    this.retryTimer.unref();
  }

  /** A shared read succeeded: once nothing waits for a retry, the backoff starts over. */
  private succeeded(): void {
    if (!this.retryTimer && this.failedFeeds.size === 0 && !this.tasksFailed) this.retryAttempt = 0;
  }

  /**
   * Reads what is new for a feed, and hands it to every subscriber: one read
   * per wake-up, whatever the number of subscribers. A failed read is retried
   * (with backoff) until it succeeds or the feed closes.
   */
  private async wake(feed: TaskFeed): Promise<void> {
    if (feed.closed) return;
    if (feed.reading || feed.failed) {
      // The read in progress, or the retry, reads from `highest` after this.
      feed.dirty = true;
      return;
    }
    feed.reading = true;
    try {
      do {
        feed.dirty = false;
        let task: Task;
        try {
          task = await bounded(SHARED_QUERY_TIMEOUT_MS, (signal) => tasksGetById(this.o.sql, { taskId: feed.taskId, signal }));
        } catch (err) {
          if (!(err instanceof NotFoundError)) throw err;
          for (const q of feed.queues) q.push([{ kind: "gone" }]);
          return;
        }
        // The snapshot first, then the messages: every message committed
        // before the snapshot's state is then in this read.
        for (;;) {
          const afterSequence = feed.highest;
          const batch = await bounded(SHARED_QUERY_TIMEOUT_MS, (signal) =>
            messagesList(this.o.sql, { taskId: feed.taskId, afterSequence, errorsOnly: false, limit: READ_BATCH, signal }),
          );
          if (feed.closed) return;
          // Each batch is pushed as it is read (a queue's limit counts what its
          // stream has not taken yet, not the size of one wake), the snapshot
          // with the last one. `highest` moves only once the batch is pushed,
          // so a failure before the next batch leaves no gap.
          const last = batch.length < READ_BATCH;
          const events: TaskEvent[] = batch.map((message) => ({ kind: "message", message }));
          if (last) events.push({ kind: "task", task });
          for (const q of feed.queues) q.push(events);
          if (batch.length) feed.highest = batch[batch.length - 1]!.sequence;
          if (last) break;
        }
        feed.task = task;
      } while (feed.dirty && !feed.closed);
      this.succeeded();
    } catch (err) {
      if (feed.closed || this.stopped) return;
      this.o.log.warn({ err, taskId: feed.taskId, attempt: this.retryAttempt }, "watch feed read failed; retrying");
      feed.failed = true;
      this.failedFeeds.add(feed);
      this.retryLater();
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
