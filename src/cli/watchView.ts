// The renderers of `tasks watch` and `tasks watch-all`: what the operator
// sees, given the events the watch logic (watch.ts) hands over.
//
// On a terminal (Output.live) a frame is redrawn in place with log-update:
// a header (action, id, status, result, elapsed time, a subtask progress bar,
// message and error counts) above the newest messages that fit the screen.
// The frame stays two rows short of the terminal's height (log-update would
// clip its top, the header, and the shell's prompt after the exit would
// scroll it away) and every message line is cut to the width, so the frame
// is exactly as tall as it is drawn. Redraws are coalesced to at most one per
// RENDER_INTERVAL_MS, and the elapsed time ticks each second. Elsewhere
// (a pipe, NO_COLOR, TERM=dumb, -o json) each event is one line or one JSON
// object, with no escape codes; notes such as reconnects go to stderr.
import { createLogUpdate } from "log-update";
import cliTruncate from "cli-truncate";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ResultMessageSchema, TaskSchema, TaskStatus, type ResultMessage, type Task } from "../../gen/drydock/statemgmt/v1/task_pb.js";
import {
  colorResult,
  colorStatus,
  elapsed,
  isFinished,
  jsonLine,
  jsonOf,
  messageLine,
  resultName,
  shortId,
  statusName,
  table,
  taskLine,
  taskRow,
  TASK_COLUMNS,
  TASK_WIDE_COLUMNS,
} from "./format.js";
import type { Output } from "./terminal.js";

/** Coalesces bursts of events (hundreds of messages a second) into about 20 frames a second. */
const RENDER_INTERVAL_MS = 50;
/** Messages kept for redrawing; more than any terminal shows. */
const KEPT_MESSAGES = 500;
const BAR_WIDTH = 20;

export interface TaskWatchView {
  /** A snapshot of the watched task. */
  task(t: Task): void;
  /** A subtask changed (or was first seen); finished/total over the direct subtasks. */
  subtask(t: Task, finished: number, total: number): void;
  message(m: ResultMessage): void;
  /** The stream dropped; it resumes after `after`. Told once per outage, not per attempt. */
  reconnecting(reason: string, after: bigint): void;
  /** Events flow again after an outage (`note` says how long it took). */
  reconnected(note: string): void;
  /** The watch is over: the task finished, or Ctrl-C. */
  close(interrupted: boolean): void;
}

export function createTaskWatchView(out: Output, now: () => number = Date.now): TaskWatchView {
  if (out.mode === "json") return jsonTaskView(out);
  return out.live ? new LiveTaskView(out, now) : plainTaskView(out);
}

function jsonTaskView(out: Output): TaskWatchView {
  return {
    task: (t) => out.print(jsonLine({ task: jsonOf(TaskSchema, t) })),
    subtask: (t) => out.print(jsonLine({ subtask: jsonOf(TaskSchema, t) })),
    message: (m) => out.print(jsonLine({ message: jsonOf(ResultMessageSchema, m) })),
    reconnecting: (reason, after) => out.note(`reconnecting after ${reason}; resuming after sequence ${after}`),
    reconnected: (note) => out.note(note),
    close: () => {},
  };
}

function plainTaskView(out: Output): TaskWatchView {
  const c = out.c;
  return {
    task: (t) =>
      out.print(`task ${taskLine(t, c)}${t.result?.errorCount ? ` errors ${t.result.errorCount}` : ""}${t.result?.message ? ` "${t.result.message}"` : ""}`),
    subtask: (t, finished, total) => out.print(`subtask ${taskLine(t, c)} (${finished}/${total} finished)`),
    message: (m) => out.print(messageLine(m, c)),
    reconnecting: (reason, after) => out.note(`reconnecting after ${reason}; resuming after sequence ${after}`),
    reconnected: (note) => out.note(note),
    close: () => {},
  };
}

/**
 * A frame redrawn in place (log-update): at most every RENDER_INTERVAL_MS after a change, and
 * every second for the clocks in it; close() draws the last frame and leaves it on screen.
 */
class LiveScreen {
  private readonly log;
  private scheduled: NodeJS.Timeout | undefined;
  private readonly ticker: NodeJS.Timeout;

  constructor(
    out: Output,
    private readonly frame: () => string,
  ) {
    this.log = createLogUpdate(out.stdout);
    this.ticker = setInterval(() => this.schedule(), 1000);
    this.ticker.unref();
  }

  schedule(): void {
    this.scheduled ??= setTimeout(() => {
      this.scheduled = undefined;
      this.log(this.frame());
    }, RENDER_INTERVAL_MS);
  }

  close(): void {
    clearInterval(this.ticker);
    clearTimeout(this.scheduled);
    this.scheduled = undefined;
    this.log(this.frame());
    this.log.done();
  }
}

/** The in-place view of one task on a terminal. */
export class LiveTaskView implements TaskWatchView {
  private readonly screen: LiveScreen;
  private current: Task | undefined;
  private readonly messages: string[] = [];
  private lastSequence = 0n;
  private errorsSeen = 0;
  private finished = 0;
  private total = 0;
  private notice = "";

  constructor(
    private readonly out: Output,
    private readonly now: () => number,
  ) {
    this.screen = new LiveScreen(out, () => this.frame());
  }

  task(t: Task): void {
    this.current = t;
    this.total = Math.max(this.total, t.subtaskIds.length);
    this.notice = "";
    this.schedule();
  }

  subtask(_t: Task, finished: number, total: number): void {
    this.finished = finished;
    this.total = Math.max(total, this.current?.subtaskIds.length ?? 0);
    this.schedule();
  }

  message(m: ResultMessage): void {
    this.lastSequence = m.sequence;
    if (m.error) this.errorsSeen++;
    this.messages.push(messageLine(m, this.out.c));
    if (this.messages.length > KEPT_MESSAGES) this.messages.splice(0, this.messages.length - KEPT_MESSAGES);
    this.notice = "";
    this.schedule();
  }

  reconnecting(reason: string, after: bigint): void {
    this.notice = this.out.c.yellow(`reconnecting after ${reason}; resuming after #${after}…`);
    this.schedule();
  }

  reconnected(): void {
    this.notice = "";
    this.schedule();
  }

  close(interrupted: boolean): void {
    if (interrupted) this.notice = this.out.c.yellow("interrupted (Ctrl-C); the task goes on");
    this.screen.close();
  }

  private schedule(): void {
    this.screen.schedule();
  }

  /** The whole frame: header lines, a rule, the newest messages that fit. */
  frame(): string {
    const { c } = this.out;
    const width = this.out.columns();
    const t = this.current;
    const header: string[] = [];
    if (!t) {
      header.push(c.dim("connecting…"));
    } else {
      const end = isFinished(t) && t.updated ? timestampDate(t.updated).getTime() : this.now();
      const start = t.created ? timestampDate(t.created).getTime() : end;
      // The id last: on a narrow terminal the cut falls on it, not on the status.
      header.push(`${c.bold(t.action)}  ${colorStatus(c, t.status)}  ${colorResult(c, t.result?.status)}  elapsed ${elapsed(end - start)}  ${c.dim(t.taskId)}`);
      const errors = Math.max(t.result?.errorCount ?? 0, this.errorsSeen);
      const counts = `messages ${this.lastSequence}  errors ${errors > 0 ? c.red(String(errors)) : "0"}`;
      header.push(`${this.total > 0 ? `subtasks ${bar(this.finished, this.total)} ${this.finished}/${this.total}` : "subtasks none"}  ${counts}`);
      if (isFinished(t)) {
        const how = t.status === TaskStatus.TERMINATED ? "terminated" : `finished: ${resultName(t.result?.status)}`;
        header.push(c.bold(`task ${how}${t.result?.message ? ` — ${t.result.message}` : ""}`));
      } else if (t.terminate) {
        header.push(c.yellow("termination requested"));
      }
    }
    if (this.notice) header.push(this.notice);
    header.push(c.dim("─".repeat(Math.max(1, width))));
    const cut = (l: string) => cliTruncate(l, width);
    // Two rows spare: log-update's cursor line below the frame, and the shell's
    // prompt after the exit, which would otherwise scroll the header away.
    const room = Math.max(0, this.out.rows() - 2 - header.length);
    const shown = room > 0 ? this.messages.slice(-room) : [];
    return [...header.map(cut), ...shown.map(cut)].join("\n");
  }
}

function bar(done: number, total: number): string {
  const filled = total > 0 ? Math.round((BAR_WIDTH * Math.min(done, total)) / total) : 0;
  return `[${"█".repeat(filled)}${"░".repeat(BAR_WIDTH - filled)}]`;
}

export interface TasksWatchView {
  /** The current snapshot of a matching task; `gone` when it no longer matches the filter. */
  task(t: Task, gone: boolean): void;
  /** The stream is being re-established; the set will be sent again. Told once per outage. */
  reconnecting(reason: string): void;
  /** Events flow again after an outage. */
  reconnected(note: string): void;
  close(): void;
}

export function createTasksWatchView(out: Output, now: () => number = Date.now): TasksWatchView {
  if (out.mode === "json") {
    return {
      task: (t) => out.print(jsonLine({ task: jsonOf(TaskSchema, t) })),
      reconnecting: (reason) => out.note(`reconnecting after ${reason}`),
      reconnected: (note) => out.note(note),
      close: () => {},
    };
  }
  if (!out.live) {
    return {
      task: (t) => out.print(`${shortId(t.taskId)} ${t.action} ${statusName(t.status)} ${resultName(t.result?.status)}`),
      reconnecting: (reason) => out.note(`reconnecting after ${reason}`),
      reconnected: (note) => out.note(note),
      close: () => {},
    };
  }
  return new LiveTasksView(out, now);
}

/** The live table of `tasks watch-all`: matching tasks, oldest first, the newest that fit the screen. */
class LiveTasksView implements TasksWatchView {
  private readonly screen: LiveScreen;
  private readonly tasks = new Map<string, Task>();
  private notice = "";

  constructor(
    private readonly out: Output,
    private readonly now: () => number,
  ) {
    this.screen = new LiveScreen(out, () => this.frame());
    this.schedule();
  }

  task(t: Task, gone: boolean): void {
    if (gone) this.tasks.delete(t.taskId);
    else this.tasks.set(t.taskId, t);
    this.notice = "";
    this.schedule();
  }

  reconnecting(reason: string): void {
    this.notice = this.out.c.yellow(`reconnecting after ${reason}…`);
    this.schedule();
  }

  reconnected(): void {
    this.notice = "";
    this.schedule();
  }

  close(): void {
    this.screen.close();
  }

  private schedule(): void {
    this.screen.schedule();
  }

  private frame(): string {
    const wide = this.out.mode === "wide";
    const all = [...this.tasks.values()].sort((a, b) => cmpCreated(a, b));
    // The summary, the table's header row, the cursor's line and one for the prompt after Ctrl-C.
    const room = Math.max(1, this.out.rows() - 4 - (this.notice ? 1 : 0));
    const shown = all.slice(-room);
    const now = this.now();
    const lines = [
      this.out.c.dim(
        `${all.length} matching task${all.length === 1 ? "" : "s"}${shown.length < all.length ? `, newest ${shown.length} shown` : ""} · Ctrl-C to stop`,
      ),
      ...(this.notice ? [this.notice] : []),
      table(
        wide ? TASK_WIDE_COLUMNS : TASK_COLUMNS,
        shown.map((t) => taskRow(t, wide, now, this.out.c)),
      ),
    ];
    const width = this.out.columns();
    return lines
      .join("\n")
      .split("\n")
      .map((l) => cliTruncate(l, width))
      .join("\n");
  }
}

function cmpCreated(a: Task, b: Task): number {
  const ta = a.created ? timestampDate(a.created).getTime() : 0;
  const tb = b.created ? timestampDate(b.created).getTime() : 0;
  return ta - tb || (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0);
}
