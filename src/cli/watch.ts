// The streams behind `tasks watch`, `tasks watch-all` and `leader --watch`:
// what to subscribe to, when to reconnect, and the exit code at the end. What
// the operator sees is watchView.ts's job.
//
// `tasks watch` reads WatchTask through stateClient's watchTask, which
// resumes after the last message delivered whenever the stream fails with a
// resumable error (a dropped connection, a server restart, WATCH_BUFFER_FULL):
// the view is handed every message exactly once, in order. Alongside, a
// WatchTasks stream on the task's direct subtasks feeds the progress bar.
// That stream, `tasks watch-all` and `leader --watch` reopen theirs through
// the same loop (stateClient's resumeStream), with a rule of their own.
// A failure before the first event (nothing listening at --server, a bad
// token) ends the command with that error instead of retrying forever.
import * as grpc from "@grpc/grpc-js";
import { ActionResult, TaskStatus, type Task } from "../../gen/drydock/statemgmt/v1/task_pb.js";
import { LeaderSchema, type Leader } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import { resumeStream, watchTask, type StateError } from "../client/stateClient.js";
import type { BackoffPolicy } from "../util/backoff.js";
import type { Connection } from "./connection.js";
import { EXIT } from "./exit.js";
import { resolveOptionalTaskId, resolveTaskId } from "./ids.js";
import { isFinished, isoDate, isoTime, jsonLine, jsonOf, leaderRow, LEADER_COLUMNS, table } from "./format.js";
import type { Output } from "./terminal.js";
import { createTaskWatchView, createTasksWatchView } from "./watchView.js";

/** The exit code of `tasks watch` for a finished task (README "Exit codes"). */
export function exitCodeFor(t: Task): number {
  if (t.status === TaskStatus.TERMINATED) return EXIT.TASK_TERMINATED;
  return t.result?.status === ActionResult.SUCCESS ? EXIT.OK : EXIT.TASK_FAILED;
}

const describe = (e: StateError) => `${grpc.status[e.code] ?? e.code}${e.reason !== grpc.status[e.code] ? ` ${e.reason}` : ""}`;

/**
 * A stream's outage as the operator is told of it: one note when it starts
 * failing, one when events flow again, however many attempts lie between
 * (with a backoff of up to 2 s, 30 s of downtime are a dozen or more).
 */
export class Outage {
  private since: number | undefined;
  private attempts = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /** A failed attempt; true for the first one of an outage, the one to report. */
  failed(): boolean {
    this.attempts++;
    if (this.since !== undefined) return false;
    this.since = this.now();
    return true;
  }

  /** An event arrived: the note that the outage is over, or undefined when there was none. */
  over(): string | undefined {
    if (this.since === undefined) return undefined;
    const note = `reconnected after ${((this.now() - this.since) / 1000).toFixed(1)}s (${this.attempts} failed attempt${this.attempts === 1 ? "" : "s"})`;
    this.since = undefined;
    this.attempts = 0;
    return note;
  }
}

/** Delays between attempts of `tasks watch-all`, `leader --watch` and the subtask stream: 100 ms doubling to 2 s, equal jitter. */
const REOPEN_BACKOFF: BackoffPolicy = { initialMs: 100, maxMs: 2000, jitter: 0.5 };

/**
 * Events of a stream, opened again after each retryable failure (with
 * backoff and jitter), and after it ends, until `signal` aborts, which ends
 * them quietly. A failure before the first event of the first stream, or
 * one that is not retryable, is thrown.
 */
async function* reopening<T>(open: (signal: AbortSignal) => AsyncIterable<T>, signal: AbortSignal, onRetry: (e: StateError) => void): AsyncGenerator<T> {
  try {
    yield* resumeStream(open, {
      signal,
      backoff: REOPEN_BACKOFF,
      resumable: (e, delivered) => delivered && (e.retryable || e.code === grpc.status.DEADLINE_EXCEEDED),
      onResume: onRetry,
      onEnd: "reopen",
    });
  } catch (err) {
    if (!signal.aborted) throw err;
  }
}

export async function tasksWatch(conn: Connection, out: Output, arg: string, afterSequence: bigint, signal: AbortSignal): Promise<number> {
  const id = await resolveTaskId(conn, arg);
  const view = createTaskWatchView(out);
  // Ends the watch (and the subtask stream) on Ctrl-C, at the end, or after a failed start.
  const ac = new AbortController();
  const stop = () => ac.abort();
  signal.addEventListener("abort", stop, { once: true });
  let last: Task | undefined;
  let startFailure: StateError | undefined;
  let subtasks: Promise<void> | undefined;
  const outage = new Outage();
  try {
    const events = watchTask(conn.state, id, {
      afterSequence,
      signal: ac.signal,
      onResume: (e, after) => {
        if (!last) {
          startFailure = e;
          ac.abort();
        } else if (outage.failed()) view.reconnecting(describe(e), after);
      },
    });
    for await (const ev of events) {
      // Each new stream starts with a snapshot of the task: the first event after an outage comes at once.
      const back = outage.over();
      if (back) view.reconnected(back);
      if (ev.event.case === "task") {
        const first = !last;
        last = ev.event.value;
        view.task(last);
        if (first) subtasks = watchSubtasks(conn, last, ac.signal, view);
      } else if (ev.event.case === "message") {
        view.message(ev.event.value);
      }
    }
  } catch (err) {
    if (startFailure || !signal.aborted) {
      view.close(false);
      throw startFailure ?? err;
    }
  } finally {
    ac.abort();
    signal.removeEventListener("abort", stop);
    await subtasks;
  }
  view.close(signal.aborted);
  if (signal.aborted) return EXIT.INTERRUPTED;
  // The stream ends OK only once the task finished; read it should the last snapshot predate that.
  if (!last || !isFinished(last)) last = (await conn.state.getTask({ taskId: id }, { deadlineMs: conn.deadlineMs })).task!;
  return exitCodeFor(last);
}

/** The direct subtasks of `parent` as they change, counted for the progress bar. */
async function watchSubtasks(conn: Connection, parent: Task, signal: AbortSignal, view: ReturnType<typeof createTaskWatchView>): Promise<void> {
  const known = new Map<string, Task>();
  const open = (s: AbortSignal) => conn.state.watchTasks({ parentTaskId: parent.taskId, sendInitial: true }, { signal: s });
  try {
    for await (const ev of reopening(open, signal, () => {})) {
      const t = ev.task!;
      const prev = known.get(t.taskId);
      if (prev && prev.version >= t.version) continue;
      known.set(t.taskId, t);
      if (prev && prev.status === t.status && prev.result?.status === t.result?.status) continue;
      const finished = [...known.values()].filter(isFinished).length;
      view.subtask(t, finished, Math.max(known.size, parent.subtaskIds.length));
    }
  } catch {
    // The progress bar is an extra: a subtask stream that cannot start (a
    // role without WatchTasks, say) leaves it at its last value.
  }
}

export interface WatchAllOptions {
  statuses: TaskStatus[];
  actions: string[];
  parent?: string;
}

export async function tasksWatchAll(conn: Connection, out: Output, o: WatchAllOptions, signal: AbortSignal): Promise<number> {
  const parent = await resolveOptionalTaskId(conn, o.parent, "--parent");
  const view = createTasksWatchView(out);
  const versions = new Map<string, bigint>();
  const statusSet = new Set(o.statuses);
  const matches = (t: Task) => (statusSet.size === 0 || statusSet.has(t.status)) && (o.actions.length === 0 || o.actions.includes(t.action));
  const open = (s: AbortSignal) =>
    conn.state.watchTasks({ statuses: o.statuses, actions: o.actions, parentTaskId: parent ?? "", sendInitial: true }, { signal: s });
  const outage = new Outage();
  const onRetry = (e: StateError) => {
    // The new stream sends the matching set again.
    versions.clear();
    if (outage.failed()) view.reconnecting(describe(e));
  };
  try {
    for await (const ev of reopening(open, signal, onRetry)) {
      // The matching set comes first on a new stream; with none, the end of an outage shows with the next change.
      const back = outage.over();
      if (back) view.reconnected(back);
      const t = ev.task!;
      if ((versions.get(t.taskId) ?? -1n) >= t.version) continue;
      versions.set(t.taskId, t.version);
      // A task that leaves the filter is sent once more, with its new state.
      view.task(t, !matches(t));
    }
  } finally {
    view.close();
  }
  return EXIT.INTERRUPTED;
}

export async function leaderShow(conn: Connection, out: Output, election: string): Promise<number> {
  const { leader } = await conn.state.getLeader({ election }, { deadlineMs: conn.deadlineMs });
  if (out.mode === "json") out.print(jsonLine(leader ? { leader: jsonOf(LeaderSchema, leader) } : {}));
  else out.print(table(LEADER_COLUMNS, [leaderRow(election, leader)]));
  return EXIT.OK;
}

function leaderLine(election: string, l: Leader | undefined): string {
  return l ? `${election} leader ${l.instanceId} term ${l.term} expires ${isoTime(l.expiresAt)}` : `${election} no leader`;
}

export async function leaderWatch(conn: Connection, out: Output, election: string, signal: AbortSignal): Promise<number> {
  const open = (s: AbortSignal) => conn.state.watchLeader({ election }, { signal: s });
  const outage = new Outage();
  const onRetry = (e: StateError) => outage.failed() && out.note(`reconnecting after ${describe(e)}`);
  for await (const ev of reopening(open, signal, onRetry)) {
    // Each new stream starts with the current leadership.
    const back = outage.over();
    if (back) out.note(back);
    if (out.mode === "json") out.print(jsonLine(ev.leader ? { leader: jsonOf(LeaderSchema, ev.leader) } : {}));
    else out.print(`${out.c.dim(isoDate(new Date()))} ${leaderLine(election, ev.leader)}`);
  }
  return EXIT.INTERRUPTED;
}
