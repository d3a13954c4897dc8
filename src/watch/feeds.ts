// Per-task feeds: one shared reader per watched task, whatever the number of
// its watchers.
//
// Contract:
// - subscribe() opens the task's feed (its snapshot, then its highest
//   sequence) once for everyone who asks while it opens, under the feed's
//   own bound, never a caller's signal; a feed that opens after all its
//   callers left is closed at once. An unknown task: NotFoundError. An
//   opening read that fails otherwise is retried like a re-read (the shared
//   RetryTimer) while anyone still waits: each caller's own deadline bounds
//   its wait, and one failed read is not every watcher's failure.
// - wake() makes the feed read the task, then every message after its
//   `highest`, 1000 (and at most `readBytes` estimated bytes) a query, and
//   push each batch to every subscriber's queue
//   (the snapshot with the last batch). `highest` moves only after a push, so
//   a failed read leaves no gap: the retry reads from where the queues end.
// - A failed read is retried by the shared RetryTimer until it succeeds or
//   the last subscriber leaves; wake-ups meanwhile only mark the feed.
// - A deleted task pushes one "gone" event.
import type { EventEmitter } from "node:events";
import type { Sql } from "../db/connect.js";
import type { ResultMessage, Task } from "../core/domain.js";
import { NotFoundError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { WatchCounters } from "../metrics/watchCounters.js";
import { SharedWork } from "../util/sharedWork.js";
import { messagesHighestSequence, messagesPage } from "../store/messages.js";
import { tasksGetById } from "../store/tasks.js";
import { taskBytes, type WatchBytes } from "./budget.js";
import { BoundedQueue } from "./queue.js";
import { bounded, type RetryTimer } from "./reads.js";
import type { WatchSignals } from "./signals.js";

/** A message event carries its estimated size on the wire (`bytes`, from the database: store/messages.ts). */
export type TaskEvent = { kind: "task"; task: Task } | { kind: "message"; message: ResultMessage; bytes: number } | { kind: "gone" };

/** Messages read per query. */
export const READ_BATCH = 1000;

/** Estimated bytes of messages read per query at most (the first message of a read whatever its size). */
export const READ_BATCH_BYTES = 1024 * 1024;

/** Bytes of messages a watch read takes at most: READ_BATCH_BYTES, or a quarter of a stream's byte limit if smaller. */
export function readBytes(streamBytes: number): number {
  return Math.max(1, Math.min(READ_BATCH_BYTES, Math.floor(streamBytes / 4)));
}

/** Estimated bytes of an event on the wire. */
export function eventBytes(event: TaskEvent): number {
  return event.kind === "message" ? event.bytes : event.kind === "task" ? taskBytes(event.task) : 0;
}

export interface FeedSubscription {
  /** The task as the feed last read it. */
  task: Task;
  /** The feed's highest sequence when the subscription began. */
  highest: bigint;
  events: BoundedQueue<TaskEvent>;
  close(): void;
}

export interface FeedsOptions {
  sql: Sql;
  log: Logger;
  /** Events a subscriber may have queued before its queue overflows. */
  bufferLimit: number;
  /** The byte budget of watch streams (budget.ts): each subscription counts its queue in it. */
  bytes: WatchBytes;
  retries: RetryTimer;
  signals: EventEmitter<WatchSignals>;
  counters: WatchCounters;
}

interface Feed {
  taskId: string;
  /** Highest sequence pushed; everything up to it is committed. */
  highest: bigint;
  task: Task;
  queues: Set<BoundedQueue<TaskEvent>>;
  reading: boolean;
  /** Something may have changed since the read in progress began. */
  dirty: boolean;
  /** A read failed; the retry timer reads again. */
  failed: boolean;
  closed: boolean;
  retry: () => void;
}

export class TaskFeeds {
  private readonly open = new Map<string, Feed>();
  private readonly opening = new SharedWork<string, Feed | undefined>({ whenAbandoned: "finish" });

  constructor(private readonly o: FeedsOptions) {}

  async subscribe(taskId: string, signal?: AbortSignal): Promise<FeedSubscription> {
    let feed = this.open.get(taskId);
    if (!feed) {
      this.o.signals.emit("feedWaiting", taskId, (this.opening.get(taskId)?.waiters ?? 0) + 1);
      try {
        feed = await this.opening.wait(taskId, signal, () => ({ promise: this.openFeed(taskId), context: undefined }));
      } finally {
        this.o.signals.emit("feedWaitEnded", taskId, this.opening.get(taskId)?.waiters ?? 0);
      }
      if (!feed) throw new Error(`the feed of ${taskId} opened for nobody`); // cannot happen: this caller waited
    }
    const bytes = this.o.bytes.stream();
    const events = new BoundedQueue<TaskEvent>(this.o.bufferLimit, bytes, eventBytes);
    const subscribed = feed;
    subscribed.queues.add(events);
    this.o.signals.emit("subscribed", taskId, subscribed.queues.size);
    let closed = false;
    return {
      task: subscribed.task,
      highest: subscribed.highest,
      events,
      close: () => {
        if (closed) return;
        closed = true;
        bytes.close();
        subscribed.queues.delete(events);
        this.o.signals.emit("unsubscribed", taskId, subscribed.queues.size);
        if (subscribed.queues.size === 0) this.close(subscribed);
      },
    };
  }

  /** Reads what is new for the task's feed, if it is watched (once it opened, if it is opening). */
  wake(taskId: string): void {
    const feed = this.open.get(taskId);
    if (feed) void this.read(feed);
    else
      void this.opening.get(taskId)?.promise.then(
        (opened) => opened && this.read(opened),
        () => {},
      );
  }

  /** Every feed reads from its position (after a reconnect: notifications may have been lost). */
  wakeAll(): void {
    for (const feed of this.open.values()) void this.read(feed);
  }

  private async openFeed(taskId: string): Promise<Feed | undefined> {
    let task: Task;
    let highest: bigint | null;
    try {
      // The snapshot first, then the position: every message committed
      // before the snapshot's state is at or below `highest`.
      task = await this.openingRead(taskId, (signal) => tasksGetById(this.o.sql, { taskId, signal }));
      highest = await this.openingRead(taskId, (signal) => messagesHighestSequence(this.o.sql, { taskId, signal }));
      if (highest === null) throw new NotFoundError("Task", taskId);
    } catch (err) {
      this.o.signals.emit("feedClosed", taskId);
      throw err;
    }
    const feed: Feed = { taskId, highest, task, queues: new Set(), reading: false, dirty: false, failed: false, closed: false, retry: () => {} };
    feed.retry = () => {
      feed.failed = false;
      void this.read(feed);
    };
    if (!this.opening.get(taskId)?.waiters) {
      this.o.signals.emit("feedClosed", taskId); // everyone who waited left
      return undefined;
    }
    this.open.set(taskId, feed);
    return feed;
  }

  /**
   * One read of a feed's opening, under its own bound, retried after the
   * shared RetryTimer's backoff while someone waits for the feed; NotFoundError
   * is an answer, not a failure.
   */
  private async openingRead<T>(taskId: string, read: (signal: AbortSignal) => Promise<T>): Promise<T> {
    for (;;) {
      try {
        const result = await bounded(read);
        this.o.retries.succeeded();
        return result;
      } catch (err) {
        if (err instanceof NotFoundError || !this.opening.get(taskId)?.waiters) throw err;
        this.o.log.warn({ err, taskId, attempt: this.o.retries.attempt }, "watch feed opening read failed; retrying");
        this.o.signals.emit("readFailed", taskId);
        const retried = await new Promise<boolean>((resolve) => this.o.retries.later(() => resolve(true)) || resolve(false));
        if (!retried) throw err; // the hub stopped
        if (!this.opening.get(taskId)?.waiters) throw err; // everyone who waited left meanwhile
      }
    }
  }

  private close(feed: Feed): void {
    if (this.open.get(feed.taskId) === feed) this.open.delete(feed.taskId);
    feed.closed = true;
    this.o.retries.cancel(feed.retry);
    this.o.signals.emit("feedClosed", feed.taskId);
  }

  /** One read per wake-up, whatever the number of subscribers. */
  private async read(feed: Feed): Promise<void> {
    if (feed.closed) return;
    if (feed.reading || feed.failed) {
      feed.dirty = true; // the read in progress, or the retry, reads from `highest` after this
      return;
    }
    feed.reading = true;
    try {
      do {
        feed.dirty = false;
        this.o.counters.feedRead();
        let task: Task;
        try {
          task = await bounded((signal) => tasksGetById(this.o.sql, { taskId: feed.taskId, signal }));
        } catch (err) {
          if (!(err instanceof NotFoundError)) throw err;
          // Normally a purge. Logged, because each of these watchers is told NOT_FOUND.
          this.o.log.info({ taskId: feed.taskId, watchers: feed.queues.size }, "watched task is gone; ending its watch streams with NOT_FOUND");
          for (const queue of feed.queues) queue.push([{ kind: "gone" }]);
          return;
        }
        // The snapshot first, then the messages: every message committed
        // before the snapshot's state is then in this read.
        for (;;) {
          const afterSequence = feed.highest;
          const page = await bounded((signal) =>
            messagesPage(this.o.sql, {
              taskId: feed.taskId,
              afterSequence,
              errorsOnly: false,
              limit: READ_BATCH,
              maxBytes: readBytes(this.o.bytes.limits.streamBytes),
              signal,
            }),
          );
          if (feed.closed) return;
          const batch = page.messages;
          const last = !page.more;
          const events: TaskEvent[] = batch.map((message, i) => ({ kind: "message", message, bytes: page.bytes[i]! }));
          if (last) events.push({ kind: "task", task });
          for (const queue of feed.queues) queue.push(events);
          if (batch.length) feed.highest = batch[batch.length - 1]!.sequence;
          if (last) break;
        }
        feed.task = task;
      } while (feed.dirty && !feed.closed);
      this.o.retries.succeeded();
    } catch (err) {
      if (feed.closed) return;
      this.o.log.warn({ err, taskId: feed.taskId, attempt: this.o.retries.attempt }, "watch feed read failed; retrying");
      feed.failed = true;
      this.o.signals.emit("readFailed", feed.taskId);
      this.o.retries.later(feed.retry);
    } finally {
      feed.reading = false;
    }
  }
}
