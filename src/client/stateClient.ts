// Helpers for orchestrators over the generated StateService client, the
// TypeScript counterparts of clients/python's: errors with their ErrorInfo,
// a task watch that resumes on its own (over resumeStream, the resume loop
// the CLI's watches use too), and a leader elector.
import { EventEmitter } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { createRegistry, fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { BadRequestSchema, ErrorInfoSchema, type BadRequest, type ErrorInfo } from "../../gen/google/rpc/error_details_pb.js";
import type { StateService, WatchTaskResponse } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import type { Leader } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import { Backoff, type BackoffPolicy } from "../util/backoff.js";
import type { Client } from "./client.js";

export type StateClient = Client<(typeof StateService)["method"]>;

const details = createRegistry(ErrorInfoSchema, BadRequestSchema);

/** A failed call, with the service's ErrorInfo reason and metadata and any field violations. */
export class StateError extends Error {
  constructor(
    readonly code: grpc.status,
    readonly reason: string,
    readonly metadata: Record<string, string>,
    readonly fieldViolations: { field: string; description: string }[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "StateError";
  }

  /** Whether trying again (with backoff) may succeed. */
  get retryable(): boolean {
    return this.code === grpc.status.UNAVAILABLE || this.code === grpc.status.ABORTED || this.code === grpc.status.RESOURCE_EXHAUSTED;
  }
}

/** The StateError of a gRPC failure (decoding google.rpc.Status from grpc-status-details-bin). */
export function stateError(err: unknown): StateError {
  if (err instanceof StateError) return err;
  const e = err as Partial<grpc.ServiceError>;
  const code = typeof e.code === "number" ? e.code : grpc.status.UNKNOWN;
  let info: ErrorInfo | undefined;
  let bad: BadRequest | undefined;
  const bin = e.metadata?.get("grpc-status-details-bin")?.[0];
  if (bin instanceof Buffer) {
    try {
      for (const any of fromBinary(StatusSchema, bin).details) {
        const msg = anyUnpack(any, details);
        if (msg?.$typeName === ErrorInfoSchema.typeName) info = msg as ErrorInfo;
        if (msg?.$typeName === BadRequestSchema.typeName) bad = msg as BadRequest;
      }
    } catch {
      // not ours: keep the code and message
    }
  }
  return new StateError(
    code,
    info?.reason ?? grpc.status[code] ?? "UNKNOWN",
    { ...(info?.metadata ?? {}) },
    bad?.fieldViolations.map((v) => ({ field: v.field, description: v.description })) ?? [],
    e.details ?? (err instanceof Error ? err.message : String(err)),
    { cause: err },
  );
}

/** Reasons after which a watch resumes from the last sequence it delivered. */
const RESUME_REASONS = new Set(["DATABASE_UNAVAILABLE", "SHUTTING_DOWN", "CONNECTION_MAX_AGE", "WATCH_BUFFER_FULL", "UNAVAILABLE"]);

export interface ResumeOptions {
  /** Ends the loop: the open stream is cancelled and the loop throws (the signal's reason, or the delay's AbortError). */
  signal?: AbortSignal;
  /** Delays between attempts; they start over with each event delivered. */
  backoff: BackoffPolicy;
  /**
   * Whether to open the stream again after `err`; when not, the loop throws
   * it. `delivered`: whether any stream of this loop delivered an event yet.
   */
  resumable(err: StateError, delivered: boolean): boolean;
  /** Told of each failure the loop resumes after, before its delay. */
  onResume?(err: StateError): void;
  /**
   * A stream that ends without an error: "done" ends the loop (WatchTask
   * ends once its task finished), "reopen" opens it again after a delay.
   */
  onEnd: "done" | "reopen";
}

/**
 * The resume loop under watchTask and the CLI's watches: the events of the
 * streams `open` returns, one after another, a new one opened (after a
 * jittered delay) whenever one fails with an error `resumable` accepts.
 * What to resume from is `open`'s to say: it is called afresh each time.
 * Each stream gets a signal of its own, aborted when the stream ends or the
 * loop's signal aborts, so a long-lived signal holds one listener of the
 * loop's, however many streams it opened.
 */
export async function* resumeStream<T>(open: (signal: AbortSignal) => AsyncIterable<T>, o: ResumeOptions): AsyncGenerator<T> {
  const backoff = new Backoff(o.backoff);
  let delivered = false;
  for (;;) {
    o.signal?.throwIfAborted();
    const attempt = new AbortController();
    const stop = () => attempt.abort(o.signal?.reason);
    o.signal?.addEventListener("abort", stop, { once: true });
    try {
      for await (const ev of open(attempt.signal)) {
        delivered = true;
        backoff.reset();
        yield ev;
      }
      if (o.onEnd === "done") return;
    } catch (err) {
      if (o.signal?.aborted) throw o.signal.reason;
      const e = stateError(err);
      if (!o.resumable(e, delivered)) throw e;
      o.onResume?.(e);
    } finally {
      o.signal?.removeEventListener("abort", stop);
      attempt.abort(); // cancels the call when the consumer left early (a no-op once it is over)
    }
    await sleep(backoff.next(), undefined, { signal: o.signal });
  }
}

export interface WatchOptions {
  /** Deliver messages after this sequence (0: all). */
  afterSequence?: bigint;
  signal?: AbortSignal;
  /** First delay before reconnecting; doubles up to maxBackoffMs (default 50 and 2000), equal jitter. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Told of every reconnect, with the error that caused it. */
  onResume?: (err: StateError, afterSequence: bigint) => void;
}

/**
 * The events of a task as WatchTask sends them, reconnecting on its own
 * after a dropped connection, a server restart or a connection's maximum age,
 * resuming after the last message delivered: no message twice, none skipped.
 * Ends when the server ends the stream (the task finished). Other errors
 * (NOT_FOUND, PERMISSION_DENIED, ...) end it with a StateError.
 */
export async function* watchTask(client: StateClient, taskId: string, o: WatchOptions = {}): AsyncGenerator<WatchTaskResponse> {
  let after = o.afterSequence ?? 0n;
  const events = resumeStream((signal) => client.watchTask({ taskId, afterSequence: after }, { signal }) as AsyncIterable<WatchTaskResponse>, {
    signal: o.signal,
    backoff: { initialMs: o.backoffMs ?? 50, maxMs: o.maxBackoffMs ?? 2000, jitter: 0.5 },
    resumable: (e) => RESUME_REASONS.has(e.reason) || e.code === grpc.status.UNAVAILABLE,
    onResume: (e) => o.onResume?.(e, after),
    onEnd: "done",
  });
  for await (const ev of events) {
    if (ev.event.case === "message") {
      if (ev.event.value.sequence <= after) continue; // cannot happen; guards a resume
      after = ev.event.value.sequence;
    }
    yield ev;
  }
}

export interface ElectorOptions {
  election: string;
  instanceId: string;
  ttlMs: number;
}

/**
 * Claims an election and keeps renewing it every ttl/3; emits "elected"
 * (with the Leader) when it gains the lease and "lost" (with the reason) as
 * soon as a renewal fails or the lease lapses, then tries to claim again.
 * fence() gives the (election, term) for fenced calls while leading.
 */
export class LeaderElector extends EventEmitter {
  private leader: Leader | undefined;
  private readonly ac = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    private readonly client: StateClient,
    private readonly o: ElectorOptions,
  ) {
    super();
  }

  get isLeader(): boolean {
    return this.leader !== undefined;
  }

  /** The fence of the current term, or undefined when not leading. */
  fence(): { election: string; term: bigint } | undefined {
    return this.leader ? { election: this.o.election, term: this.leader.term } : undefined;
  }

  start(): void {
    this.loop ??= this.run().catch(() => {});
  }

  /** Stops renewing and resigns the lease if held. */
  async stop(): Promise<void> {
    this.ac.abort();
    await this.loop;
    const held = this.leader;
    this.leader = undefined;
    if (held)
      await this.client.resignLeadership({ election: this.o.election, instanceId: this.o.instanceId, term: held.term }, { deadlineMs: 2000 }).catch(() => {});
  }

  private async run(): Promise<void> {
    const signal = this.ac.signal;
    const ttl = { seconds: BigInt(Math.floor(this.o.ttlMs / 1000)), nanos: (this.o.ttlMs % 1000) * 1_000_000 };
    const every = this.o.ttlMs / 3;
    while (!signal.aborted) {
      try {
        if (!this.leader) {
          const r = await this.client.claimLeadership({ election: this.o.election, instanceId: this.o.instanceId, ttl }, { deadlineMs: every, signal });
          if (r.isLeader) {
            this.leader = r.leader!;
            this.emit("elected", r.leader);
          }
        } else {
          const r = await this.client.renewLeadership(
            { election: this.o.election, instanceId: this.o.instanceId, term: this.leader.term },
            { deadlineMs: every, signal },
          );
          this.leader = r.leader!;
        }
      } catch (err) {
        if (signal.aborted) return;
        // A renewal that fails, for any reason, ends the leadership at once:
        // the lease may lapse before the next one could succeed.
        if (this.leader) {
          this.leader = undefined;
          this.emit("lost", stateError(err));
        }
      }
      await sleep(every, undefined, { signal }).catch(() => {});
    }
  }
}
