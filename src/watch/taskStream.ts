// One WatchTask stream's events: the task's snapshot, every message after
// `afterSequence` exactly once and in order, and each snapshot that shows a
// change, until the task finishes (plus a linger) or is deleted.
//
// Contract:
// - subscribes to the task's feed first, then catches up from the database
//   to the feed's position (1000 a query); between queries it takes what the
//   feed queued meanwhile, so a long catch-up is not falling behind: those
//   messages are read from the database instead and the newest snapshot is
//   kept for after them;
// - from there the feed's pushes carry everything: messages at or below the
//   cursor are dropped (a duplicate read), and a gap is an error;
// - a snapshot is sent only when what a client sees (status, result,
//   termination) changed;
// - once the task is finished, the stream lingers `lingerMs` for the
//   messages posted as part of finishing it, then ends;
// - the task's deletion ends it with NOT_FOUND, falling behind with
//   RESOURCE_EXHAUSTED WATCH_BUFFER_FULL (through `abort`).
import type { Sql } from "../db/connect.js";
import { FINISHED_STATUSES, type ResultMessage, type Task } from "../domain.js";
import { NotFoundError, type DomainError } from "../errors.js";
import { messagesList } from "../store/messages.js";
import { endWhenBehind } from "./endings.js";
import { READ_BATCH, type TaskEvent, type TaskFeeds } from "./feeds.js";

export type TaskStreamEvent = { kind: "task"; task: Task } | { kind: "message"; message: ResultMessage };

export interface TaskStreamParams {
  taskId: string;
  afterSequence: bigint;
  /** The call's signal. */
  signal: AbortSignal;
  /** Ends the call with this error, even while it waits for a slow client. */
  abort(err: DomainError): void;
  /** How long to stay open after the task finished (0: end at once). */
  lingerMs: number;
}

const snapshotKeys = new WeakMap<Task, string>();

/** What a WatchTask client sees change; computed once per task object, which a feed shares with all its watchers. */
function snapshotKey(task: Task): string {
  let key = snapshotKeys.get(task);
  if (key === undefined) {
    key = JSON.stringify([task.status, task.result, task.terminate, task.terminated?.toString() ?? null, task.terminatedBy]);
    snapshotKeys.set(task, key);
  }
  return key;
}

const finished = (task: Task) => FINISHED_STATUSES.includes(task.status);

const deleted = (taskId: string) => new NotFoundError("Task", taskId, `task ${taskId} was deleted`);

/**
 * The call's signal, also aborted `ms` after start(). (A plain timer:
 * AbortSignal.any() and AbortSignal.timeout() signals can be collected
 * before they fire in Node 20.)
 */
class Linger {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  over = false;
  private readonly onAbort = () => this.controller.abort(this.parent.reason);

  constructor(
    private readonly parent: AbortSignal,
    private readonly ms: number,
  ) {
    if (parent.aborted) this.controller.abort(parent.reason);
    else parent.addEventListener("abort", this.onAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  start(): void {
    if (this.timer || this.over) return;
    const end = () => {
      this.over = true;
      this.controller.abort(new Error("linger over"));
    };
    if (this.ms <= 0) end();
    else this.timer = setTimeout(end, this.ms);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.parent.removeEventListener("abort", this.onAbort);
  }
}

export async function* taskStream(feeds: TaskFeeds, sql: Sql, p: TaskStreamParams): AsyncGenerator<TaskStreamEvent> {
  const { taskId, signal } = p;
  const subscription = await feeds.subscribe(taskId, signal);
  endWhenBehind(subscription.events, p.abort);
  // Made once the task is finished: most streams never need one (10,000 idle streams).
  let linger: Linger | undefined;
  const finishing = () => (linger ??= new Linger(signal, p.lingerMs)).start();
  try {
    let cursor = p.afterSequence;
    let shown = subscription.task;
    yield { kind: "task", task: shown };

    let target = subscription.highest;
    let newest: Task | undefined;
    const absorb = (events: TaskEvent[]) => {
      for (const event of events) {
        if (event.kind === "gone") throw deleted(taskId);
        if (event.kind === "message") {
          if (event.message.sequence > target) target = event.message.sequence;
        } else newest = event.task;
      }
    };
    while (cursor < target) {
      const batch = await messagesList(sql, { taskId, afterSequence: cursor, errorsOnly: false, limit: READ_BATCH, signal });
      if (batch.length === 0) break;
      for (const message of batch) yield { kind: "message", message };
      cursor = batch[batch.length - 1]!.sequence;
      absorb(subscription.events.takeNow(signal));
    }
    if (newest) {
      if (snapshotKey(newest) !== snapshotKey(shown)) yield { kind: "task", task: newest };
      shown = newest;
    }

    if (finished(shown)) finishing();
    for (;;) {
      let events: TaskEvent[];
      try {
        events = await subscription.events.takeAll(linger?.signal ?? signal);
      } catch (err) {
        if (linger?.over) return;
        throw err;
      }
      for (const event of events) {
        if (event.kind === "gone") throw deleted(taskId);
        if (event.kind === "message") {
          const { sequence } = event.message;
          if (sequence <= cursor) continue;
          if (sequence !== cursor + 1n) throw new Error(`watch of ${taskId}: sequence ${sequence} follows ${cursor}`); // cannot happen: see store/messages.ts
          yield event;
          cursor = sequence;
        } else {
          if (snapshotKey(event.task) !== snapshotKey(shown)) yield event;
          shown = event.task;
          if (finished(shown)) finishing();
        }
      }
    }
  } finally {
    linger?.dispose();
    subscription.close();
  }
}
