// How watch streams end: the documented status of falling behind, and the
// reason each ending is counted under (statemgmt_watch_streams_ended_total).
import {
  ConnectionAgedError,
  DeadlineReason,
  CancelledError,
  NotFoundError,
  ResourceExhaustedError,
  ShuttingDownError,
  type DomainError,
} from "../core/errors.js";
import type { StreamEndReason, WatchCounters, WatchKind } from "../metrics/watchCounters.js";
import { PushStream } from "../contract/push.js";
import type { WatchByteLimits } from "./budget.js";
import type { BoundedQueue, OverflowReason } from "./queue.js";

/**
 * RESOURCE_EXHAUSTED WATCH_BUFFER_FULL: the stream fell `limit` or more
 * events behind, or held too many unsent bytes (its own limit, or all
 * streams' together: budget.ts). ErrorInfo metadata: limit (events), and for
 * bytes limit_bytes (the stream's) and server_limit_bytes.
 */
export function fellBehind(limit: number, reason: OverflowReason = "events", bytes?: WatchByteLimits): ResourceExhaustedError {
  const resume = "reconnect with after_sequence set to the last sequence received";
  const metadata: Record<string, string> = { limit: String(limit) };
  if (bytes) {
    metadata.limit_bytes = String(bytes.streamBytes);
    metadata.server_limit_bytes = String(bytes.serverBytes);
  }
  const why =
    reason === "stream"
      ? `the client fell ${bytes?.streamBytes} or more bytes behind (STATEMGMT_WATCH_STREAM_MAX_BYTES)`
      : reason === "server"
        ? `the client fell behind while the server's watch streams held ${bytes?.serverBytes} or more unsent bytes together (STATEMGMT_WATCH_MAX_BYTES)`
        : `the client fell ${limit} or more events behind`;
  return new ResourceExhaustedError("WATCH_BUFFER_FULL", `${why} and the stream was ended; ${resume}`, metadata);
}

/** Ends the call (through `abort`, even while it waits for a slow client) when the queue overflows. */
export function endWhenBehind<T>(queue: BoundedQueue<T>, abort: (err: DomainError) => void): void {
  queue.onOverflow = (reason) => abort(fellBehind(queue.limit, reason, queue.bytes?.limits));
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
