// How watch streams end: the documented status of falling behind, and the
// reason each ending is counted under (statemgmt_watch_streams_ended_total).
import { ConnectionAgedError, DeadlineReason, CancelledError, NotFoundError, ResourceExhaustedError, ShuttingDownError, type DomainError } from "../errors.js";
import type { StreamEndReason, WatchCounters, WatchKind } from "../metrics/watchCounters.js";
import { PushStream } from "../push.js";
import type { BoundedQueue } from "./queue.js";

/** RESOURCE_EXHAUSTED WATCH_BUFFER_FULL: the stream fell `limit` or more events behind. */
export function fellBehind(limit: number): ResourceExhaustedError {
  return new ResourceExhaustedError(
    "WATCH_BUFFER_FULL",
    `the client fell ${limit} or more events behind and the stream was ended; reconnect with after_sequence set to the last sequence received`,
    { limit: String(limit) },
  );
}

/** Ends the call (through `abort`, even while it waits for a slow client) when the queue overflows. */
export function endWhenBehind<T>(queue: BoundedQueue<T>, abort: (err: DomainError) => void): void {
  queue.onOverflow = () => abort(fellBehind(queue.limit));
}

function reasonOf(signal: AbortSignal, err: unknown, returned: boolean): StreamEndReason {
  if (signal.aborted) {
    const why = signal.reason;
    if (why instanceof ResourceExhaustedError && why.reason === "WATCH_BUFFER_FULL") return "fell_behind";
    if (why instanceof ConnectionAgedError) return "connection_max_age";
    if (why instanceof ShuttingDownError) return "shutdown";
    if (why instanceof DeadlineReason) return "deadline";
    if (why instanceof CancelledError) return "cancelled";
    return "error";
  }
  if (returned) return "task_finished";
  return err instanceof NotFoundError ? "task_deleted" : "error";
}

/** Passes `source` through, counting how it ended once it does. */
export async function* countEnding<T>(kind: WatchKind, counters: WatchCounters, signal: AbortSignal, source: AsyncIterable<T>): AsyncGenerator<T> {
  let returned = false;
  let failure: unknown;
  try {
    yield* source;
    returned = true;
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    counters.streamEnded(kind, reasonOf(signal, failure, returned));
  }
}

/** `stream`, counting how it ended once it does. */
export function countPushEnding<T>(kind: WatchKind, counters: WatchCounters, signal: AbortSignal, stream: PushStream<T>): PushStream<T> {
  return new PushStream(async (sink) => {
    let returned = false;
    let failure: unknown;
    try {
      await stream.run(sink);
      returned = true;
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      counters.streamEnded(kind, reasonOf(signal, failure, returned));
    }
  });
}
