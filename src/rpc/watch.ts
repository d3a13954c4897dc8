// WatchTask and WatchTasks: server-streaming views fed by the notification hub.
import type { Sql } from "../db/connect.js";
import { FINISHED_STATUSES, type Task, type TaskStatus } from "../domain.js";
import { NotFoundError, ResourceExhaustedError } from "../errors.js";
import type { CallContext } from "../server/adapter.js";
import { seesSecrets } from "../auth/roles.js";
import { messagesList } from "../store/messages.js";
import { tasksList } from "../store/tasks.js";
import type { BoundedQueue } from "../watch/queue.js";
import { SHARED_QUERY_TIMEOUT_MS, type TaskEvent, type WatchHub } from "../watch/hub.js";
import { SentVersions } from "../watch/sent.js";
import { messageEventToPb, taskToPb } from "./convert.js";
import { statusList, type StateImpl } from "./tasks.js";
import { LIMITS, Validator } from "./validate.js";

const READ_BATCH = 1000;

const snapshotKeys = new WeakMap<Task, string>();

/**
 * What a WatchTask client sees change: status, result, termination flags.
 * Computed once per task object, which a feed shares with all its watchers.
 */
function snapshotKey(t: Task): string {
  let key = snapshotKeys.get(t);
  if (key === undefined) {
    key = JSON.stringify([t.status, t.result, t.terminate, t.terminated?.toString() ?? null, t.terminatedBy]);
    snapshotKeys.set(t, key);
  }
  return key;
}

const changeKeys = new WeakMap<Task, string>();

/**
 * What a WatchTasks client sees change: every field but the version, the
 * update time and the error count, which move with each appended result
 * message. So pure appends send no WatchTasks snapshot (the next snapshot
 * carries the current error count); a change of status, result, termination,
 * claim, subtasks or any other field does.
 */
function changeKey(t: Task): string {
  let key = changeKeys.get(t);
  if (key === undefined) {
    const { version: _v, updated: _u, result, ...rest } = t;
    const { errorCount: _e, ...resultRest } = result;
    key = JSON.stringify({ ...rest, result: resultRest }, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
    changeKeys.set(t, key);
  }
  return key;
}

const finished = (t: Task) => FINISHED_STATUSES.includes(t.status);

export interface WatchOptions {
  /**
   * How long a WatchTask stream stays open after its task finished, to send
   * the messages posted as part of finishing it (Drydock posts a final
   * summary right after completing a task); 0 ends it at once.
   */
  finishLingerMs: number;
}

export const DEFAULT_WATCH_OPTIONS: WatchOptions = { finishLingerMs: 3000 };

/** Ends the call with RESOURCE_EXHAUSTED when the client cannot keep up. */
function guard<T>(q: BoundedQueue<T>, ctx: CallContext): void {
  q.onOverflow = () =>
    ctx.abort(
      new ResourceExhaustedError(
        "WATCH_BUFFER_FULL",
        `the client fell ${q.limit} or more events behind and the stream was ended; reconnect with after_sequence set to the last sequence received`,
        { limit: String(q.limit) },
      ),
    );
}

/**
 * The call's signal, and once start() is called, also aborted `ms` later:
 * what a WatchTask stream waits on. (A plain timer: AbortSignal.any() and
 * AbortSignal.timeout() signals can be collected before they fire in Node 20.)
 */
class Linger {
  private readonly ac = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  over = false;
  private readonly onAbort = () => this.ac.abort(this.parent.reason);

  constructor(
    private readonly parent: AbortSignal,
    private readonly ms: number,
  ) {
    if (parent.aborted) this.ac.abort(parent.reason);
    else parent.addEventListener("abort", this.onAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  /** Starts the linger (once). */
  start(): void {
    if (this.timer || this.over) return;
    const end = () => {
      this.over = true;
      this.ac.abort(new Error("linger over"));
    };
    if (this.ms <= 0) end();
    else this.timer = setTimeout(end, this.ms);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.parent.removeEventListener("abort", this.onAbort);
  }
}

export function watchRpcs(sql: Sql, hub: WatchHub, opts: WatchOptions = DEFAULT_WATCH_OPTIONS): StateImpl {
  return {
    async *watchTask(req, ctx) {
      const { signal } = ctx;
      const secrets = seesSecrets(ctx.caller);
      const v = new Validator();
      const taskId = v.uuid("task_id", req.taskId, true);
      if (req.afterSequence < 0n) v.add("after_sequence", "must not be negative");
      v.check();

      const sub = await hub.subscribeTask(taskId, signal);
      guard(sub.events, ctx);
      const linger = new Linger(signal, opts.finishLingerMs);
      try {
        let cursor = req.afterSequence;
        let last = sub.task;
        yield { event: { case: "task", value: taskToPb(last, secrets) } };
        // Catch up from the database to the feed's position; from there on the
        // feed's shared reads carry everything. Between reads the stream takes
        // what the feed queued meanwhile, so that a long catch-up does not
        // count as falling behind: those messages are read here from the
        // database instead (the target moves up to them), and the newest
        // snapshot is kept for after them.
        let target = sub.highest;
        let snapshot: Task | undefined;
        const absorb = (events: TaskEvent[]) => {
          for (const e of events) {
            if (e.kind === "gone") throw new NotFoundError("Task", taskId, `task ${taskId} was deleted`);
            if (e.kind === "message") {
              if (e.message.sequence > target) target = e.message.sequence;
            } else snapshot = e.task;
          }
        };
        while (cursor < target) {
          const batch = await messagesList(sql, { taskId, afterSequence: cursor, errorsOnly: false, limit: READ_BATCH, signal });
          if (batch.length === 0) break;
          for (const m of batch) yield messageEventToPb(m);
          cursor = batch[batch.length - 1]!.sequence;
          absorb(sub.events.takeNow(signal));
        }
        if (snapshot) {
          if (snapshotKey(snapshot) !== snapshotKey(last)) yield { event: { case: "task", value: taskToPb(snapshot, secrets) } };
          last = snapshot;
        }
        // Once the task is finished, the stream lingers for the messages
        // posted as part of finishing it, then ends OK.
        if (finished(last)) linger.start();
        for (;;) {
          let events: TaskEvent[];
          try {
            events = await sub.events.takeAll(linger.signal);
          } catch (err) {
            if (linger.over) return;
            throw err;
          }
          for (const e of events) {
            if (e.kind === "gone") throw new NotFoundError("Task", taskId, `task ${taskId} was deleted`);
            if (e.kind === "message") {
              const m = e.message;
              if (m.sequence <= cursor) continue;
              if (m.sequence !== cursor + 1n) {
                throw new Error(`watch of ${taskId}: sequence ${m.sequence} follows ${cursor}`); // cannot happen: see store/messages.ts
              }
              yield messageEventToPb(m);
              cursor = m.sequence;
            } else {
              if (snapshotKey(e.task) !== snapshotKey(last)) yield { event: { case: "task", value: taskToPb(e.task, secrets) } };
              last = e.task;
              if (finished(last)) linger.start();
            }
          }
        }
      } finally {
        linger.dispose();
        sub.close();
      }
    },

    async *watchTasks(req, ctx) {
      const { signal } = ctx;
      const secrets = seesSecrets(ctx.caller);
      const v = new Validator();
      const statuses = statusList(v, "statuses", req.statuses);
      if (req.actions.length > LIMITS.listFilterValues) v.add("actions", `at most ${LIMITS.listFilterValues} actions`);
      req.actions.forEach((a, i) => v.action(`actions[${i}]`, a));
      const parent = v.uuid("parent_task_id", req.parentTaskId, false);
      v.check();
      const statusSet = new Set<TaskStatus>(statuses);
      const actionSet = new Set(req.actions);
      const matches = (t: Task) =>
        (statusSet.size === 0 || statusSet.has(t.status)) &&
        (actionSet.size === 0 || actionSet.has(t.action)) &&
        (parent === "" || t.parentTaskId === parent);

      // Subscribe before reading the initial set, so no change falls between.
      const sub = hub.subscribeTasks();
      guard(sub.events, ctx);
      // Version last sent per matching task: drops stale snapshots.
      const sent = new SentVersions(2 * SHARED_QUERY_TIMEOUT_MS);
      try {
        if (req.sendInitial) {
          let after: { created: bigint; taskId: string } | null = null;
          for (;;) {
            const page = await tasksList(sql, {
              statuses,
              actions: req.actions,
              parentTaskId: parent === "" ? null : parent,
              createdAfter: null,
              createdBefore: null,
              after,
              limit: READ_BATCH,
              signal,
            });
            for (const t of page) {
              sent.record(t.taskId, t.version, changeKey(t), finished(t));
              yield { task: taskToPb(t, secrets), initial: true };
            }
            if (page.length < READ_BATCH) break;
            const l = page[page.length - 1]!;
            after = { created: l.created, taskId: l.taskId };
          }
        }
        for (;;) {
          for (const t of await sub.events.takeAll(signal)) {
            const prev = sent.get(t.taskId);
            if (prev !== undefined ? t.version <= prev.version : !matches(t)) continue;
            // A task that leaves the filter is sent once more (its new state), then forgotten.
            const key = changeKey(t);
            if (matches(t)) {
              sent.record(t.taskId, t.version, key, finished(t));
              if (prev?.key === key) continue; // a pure append: nothing a WatchTasks client sees changed
            } else sent.forget(t.taskId);
            yield { task: taskToPb(t, secrets), initial: false };
          }
          if (sub.events.size === 0) sent.evictFinished(); // see SentVersions
        }
      } finally {
        sub.close();
      }
    },
  };
}
