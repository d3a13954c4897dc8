// One WatchTask stream's events: the task's snapshot, every message after
// `afterSequence` exactly once and in order, and each snapshot that shows a
// change, until the task finishes (plus a linger) or is deleted.
//
// Contract:
// - subscribes to the task's feed first, then catches up from the database
//   to the feed's position (1000 messages, at most `readBytes` estimated
//   bytes a query), reading the next batch only once the client took the
//   last (it never holds more than one batch); between queries it takes what the
//   feed queued meanwhile, so a long catch-up is not falling behind: those
//   messages are read from the database instead and the newest snapshot is
//   kept for after them;
// - from there the feed's pushes carry everything: messages at or below the
//   cursor are dropped (a duplicate read), and a gap is an error. While the
//   client keeps up, each push is written to the call inside the feed's loop
//   over its watchers (contract/push.ts); while it does not, pushes wait in the
//   stream's bounded queue;
// - a snapshot is sent only when what a client sees (status, result,
//   termination) changed;
// - once the task is finished, the stream lingers `lingerMs` for the
//   messages posted as part of finishing it, then ends;
// - the task's deletion ends it with NOT_FOUND, falling behind with
//   RESOURCE_EXHAUSTED WATCH_BUFFER_FULL (through `abort`);
// - what it writes counts in its byte budget (budget.ts) until grpc-js has
//   handed it to the connection, and is given back when the stream ends.
import type { Sql } from "../db/connect.js";
import { FINISHED_STATUSES, type ResultMessage, type Task } from "../core/domain.js";
import { NotFoundError, type DomainError } from "../core/errors.js";
import { PushStream, type Sink } from "../contract/push.js";
import { messagesPage } from "../store/messages.js";
import { endWhenBehind } from "./endings.js";
import { eventBytes, READ_BATCH, readBytes, type TaskEvent, type TaskFeeds } from "./feeds.js";
import type { BoundedQueue } from "./queue.js";

export type TaskStreamEvent = { kind: "task"; task: Task } | { kind: "message"; message: ResultMessage; bytes: number };

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

/** Sends `event`; waits while the client is not keeping up. */
async function send(sink: Sink<TaskStreamEvent>, event: TaskStreamEvent): Promise<void> {
  if (!sink.write(event)) await sink.ready();
}

/** A WatchTask stream (see the top of this file): pushed to its call, see contract/push.ts. */
export function taskStream(feeds: TaskFeeds, sql: Sql, p: TaskStreamParams): PushStream<TaskStreamEvent> {
  return new PushStream((sink) => run(feeds, sql, p, sink));
}

async function run(feeds: TaskFeeds, sql: Sql, p: TaskStreamParams, call: Sink<TaskStreamEvent>): Promise<void> {
  const { taskId, signal } = p;
  const subscription = await feeds.subscribe(taskId, signal);
  endWhenBehind(subscription.events, p.abort);
  const bytes = subscription.events.bytes!;
  // Every write counted until it left (budget.ts).
  const sink: Sink<TaskStreamEvent> = { write: (event) => call.write(event, bytes.write(eventBytes(event))), ready: () => call.ready() };
  try {
    let cursor = p.afterSequence;
    let shown = subscription.task;
    await send(sink, { kind: "task", task: shown });

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
      const page = await messagesPage(sql, {
        taskId,
        afterSequence: cursor,
        errorsOnly: false,
        limit: READ_BATCH,
        maxBytes: readBytes(bytes.limits.streamBytes),
        signal,
      });
      const batch = page.messages;
      if (batch.length === 0) break;
      for (let i = 0; i < batch.length; i++) {
        await send(sink, { kind: "message", message: batch[i]!, bytes: page.bytes[i]! });
        await bytes.writable(signal);
      }
      cursor = batch[batch.length - 1]!.sequence;
      absorb(subscription.events.takeNow(signal));
    }
    if (newest) {
      if (snapshotKey(newest) !== snapshotKey(shown)) await send(sink, { kind: "task", task: newest });
      shown = newest;
    }
    await live(subscription.events, sink, { ...p, cursor, shown });
  } finally {
    subscription.close();
  }
}

/**
 * The live part: the feed's pushes, handed over as they happen while the
 * client keeps up (the queue's deliverTo), queued while it does not. Settles
 * when the stream ends: the linger after the finish is over (resolves), the
 * task is deleted, the call is aborted (rejects).
 */
function live(queue: BoundedQueue<TaskEvent>, sink: Sink<TaskStreamEvent>, p: TaskStreamParams & { cursor: bigint; shown: Task }): Promise<void> {
  const { taskId, signal } = p;
  let { cursor } = p;
  let shownKey = snapshotKey(p.shown);
  return new Promise<void>((resolve, reject) => {
    let over = false;
    let lingering = false;
    let timer: NodeJS.Timeout | undefined;
    const end = (err?: unknown) => {
      if (over) return;
      over = true;
      queue.deliverTo(undefined);
      signal.removeEventListener("abort", onAbort);
      clearTimeout(timer);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onAbort = () => end(signal.reason);
    // Once the task is finished, stay `lingerMs` for the messages posted as
    // part of finishing it. (A plain timer: AbortSignal.timeout() signals can
    // be collected before they fire in Node 20.)
    const linger = () => {
      if (lingering) return;
      lingering = true;
      if (p.lingerMs > 0) timer = setTimeout(end, p.lingerMs);
    };

    /** Sends what is new in `events`; false when the client is not keeping up (callers check `over` too). */
    const handle = (events: readonly TaskEvent[]): boolean => {
      let keepingUp = true;
      for (const event of events) {
        if (event.kind === "gone") {
          end(deleted(taskId));
          return false;
        }
        if (event.kind === "message") {
          const { sequence } = event.message;
          if (sequence <= cursor) continue;
          if (sequence !== cursor + 1n) {
            end(new Error(`watch of ${taskId}: sequence ${sequence} follows ${cursor}`)); // cannot happen: see store/messages.ts
            return false;
          }
          if (!sink.write(event)) keepingUp = false;
          cursor = sequence;
        } else {
          const key = snapshotKey(event.task);
          if (key !== shownKey) {
            shownKey = key;
            if (!sink.write(event)) keepingUp = false;
          }
          if (finished(event.task)) linger();
        }
      }
      if (lingering && p.lingerMs <= 0) end();
      return keepingUp;
    };
    // Runs inside the feed's loop over its subscribers: it must not throw.
    const deliver = (events: readonly TaskEvent[]) => {
      try {
        if (handle(events) || over) return;
      } catch (err) {
        end(err);
        return;
      }
      queue.deliverTo(undefined);
      void catchUp();
    };
    /** Waits for the client, sends what was queued meanwhile, and takes pushes as they happen again. */
    // Never waits once the stream is over: the call's "drain" would not come.
    const catchUp = async () => {
      try {
        for (;;) {
          await sink.ready();
          if (over) return;
          const keptUp = handle(queue.takeNow(signal));
          if (over) return;
          if (keptUp) break;
        }
        queue.deliverTo(deliver);
      } catch (err) {
        end(err);
      }
    };

    if (signal.aborted) return end(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    if (finished(p.shown)) linger();
    try {
      const keptUp = handle(queue.takeNow(signal));
      if (over) return;
      if (keptUp) queue.deliverTo(deliver);
      else void catchUp();
    } catch (err) {
      end(err);
    }
  });
}
