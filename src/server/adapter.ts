// Serves protobuf-es v2 service descriptors on grpc-js. Handlers are plain
// functions: `async (request, ctx) => response` for unary methods, async
// generators (or a PushStream, contract/push.ts) for server-streaming ones, and
// `(requests, ctx) => responses` for bidi ones. The adapter
//   - (de)serializes with the generated schemas; request bytes that do not
//     decode as the method's input message get INVALID_ARGUMENT (grpc-js
//     itself would answer INTERNAL),
//   - turns the deadline, client cancellation and server shutdown into one
//     AbortSignal (ctx.signal) that cancels the call's database work,
//   - runs the service's guard (authentication, authorization: auth.ts)
//     before the request reaches the handler, and hands the handler the
//     caller (ctx.caller),
//   - answers every call exactly once, mapping errors in one place
//     (status.ts), and logs one line per call (with the caller's subject),
//   - answers UNIMPLEMENTED for methods without a handler.
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { create, type DescMessage, type DescMethod, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { Logger } from "../core/log.js";
import { OPEN_CALLER, type Caller } from "../auth/roles.js";
import type { CallContext, CallObserver, Guard, GuardedCall, MethodLabels, ServiceImpl } from "../contract/contract.js";
import { grpcDefinition, UndecodableRequest } from "../contract/definition.js";
import { DeadlineReason } from "../core/errors.js";
import { PushStream } from "../contract/push.js";
import { toServiceError } from "./status.js";
import { grpcCodeLabel } from "../metrics/grpcCode.js";
import { abortError, CancelledError, ConnectionAgedError, DomainError, ResourceExhaustedError } from "../core/errors.js";

/** The controllers of open calls, so shutdown can abort them. */
export interface OpenCalls {
  unary: Set<AbortController>;
  /** Every service's streams (shutdown ends them all); each service counts its own against its budget. */
  streams: Set<AbortController>;
  /** When a streaming call on the connection of `peer` must end (the connection's maximum age), if ever. */
  streamEndsAt?(peer: string): number | undefined;
  /**
   * Told when a call starts and ends on the connection of `peer` (idle
   * tracking), and when a call vouches for its connection: it was admitted
   * with an authenticated caller, or a service that vouches on success
   * answered it OK (connections.ts, "Vouching").
   */
  onCall?: { started(peer: string): void; ended(peer: string): void; vouched(peer: string): void };
  /** Told of every call's start, messages and end (metrics). */
  observer?: CallObserver;
}

/**
 * The streaming calls of one service (or a group of services) open at once,
 * and their limit: beyond it, RESOURCE_EXHAUSTED STREAM_LIMIT naming the
 * setting. Health and reflection have budgets of their own, so streams that
 * anyone may open never use up the StateService's. A stream is counted once
 * its caller is admitted, so refused callers hold nothing.
 */
export class StreamBudget {
  open = 0;
  constructor(
    readonly max: number,
    /** The setting that raises it, for the error message. */
    readonly setting: string,
    /** What the streams are, for the error message, e.g. "health Watch streams". */
    readonly what: string,
  ) {}
}

/** How the edge treats the calls of one service. */
export interface ServiceEdge {
  /** Authentication and authorization (auth.ts); none: every caller is OPEN_CALLER. */
  guard?: Guard;
  /** The budget its streaming calls count against; none: unbounded. */
  streams?: StreamBudget;
  /**
   * A call answered OK vouches for its connection even with an anonymous
   * caller: the StateService's key-authorized methods succeed only with a
   * node's valid identity key. Not health: anyone's Check succeeds.
   */
  okVouches?: boolean;
}

/**
 * Registers `impl` for `service` on `server`. Every open call's controller is
 * kept in `calls`, so shutdown can abort them with ShuttingDownError.
 */
export function addService<S extends GenServiceMethods>(
  server: grpc.Server,
  service: GenService<S>,
  impl: ServiceImpl<S>,
  log: Logger,
  calls: OpenCalls,
  edge: ServiceEdge = {},
): void {
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of (service as DescService).methods) {
    const fn = (impl as Record<string, unknown>)[method.localName] as ((...a: unknown[]) => unknown) | undefined;
    handlers[method.localName] = makeHandler(method, fn, log, calls, edge);
  }
  server.addService(grpcDefinition(service), handlers);
}

/** Longest delay setTimeout takes; longer ones fire at once (Node clamps them to 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * setTimeout for any delay: a deadline weeks away is re-armed in steps.
 * (grpc-js 1.14 itself truncates the grpc-timeout header to 32 bits, so today
 * a deadline more than 24.8 days away ends the call before it reaches us.)
 */
function longTimeout(fn: () => void, ms: number): { clear(): void } {
  let t: NodeJS.Timeout;
  const arm = (left: number) => {
    t = left > MAX_TIMER_MS ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left));
  };
  arm(ms);
  return { clear: () => clearTimeout(t) };
}

/** What every kind of grpc-js server call offers. */
type AnyCall = NodeJS.EventEmitter &
  GuardedCall & {
    getDeadline(): grpc.Deadline;
    getPeer(): string;
  };

function makeHandler(
  method: DescMethod,
  fn: ((...a: unknown[]) => unknown) | undefined,
  log: Logger,
  calls: OpenCalls,
  edge: ServiceEdge,
): grpc.UntypedHandleCall {
  const { guard, streams: budget, okVouches = false } = edge;
  const name = `${method.parent.typeName}/${method.name}`;
  const labels: MethodLabels = {
    grpc_service: method.parent.typeName,
    grpc_method: method.name,
    grpc_type: method.methodKind === "unary" ? "unary" : method.methodKind === "server_streaming" ? "server_stream" : "bidi_stream",
  };
  const observer = calls.observer;
  /** Admitted with a caller who holds a role (authenticated, or any caller without authentication): the connection is vouched for. */
  const admitted = (ctx: CallContext, caller: Caller) => {
    ctx.caller = caller;
    if (caller.roles.length > 0) calls.onCall?.vouched(ctx.peer);
  };
  /** Runs the guard; a synchronous one (no guard, a token file lookup) costs no extra turn. */
  const admit = (call: AnyCall, ctx: CallContext): Promise<void> | undefined => {
    if (!guard) {
      admitted(ctx, OPEN_CALLER);
      return undefined;
    }
    const c = guard(call, method, ctx.signal);
    if (c instanceof Promise) return c.then((caller) => admitted(ctx, caller));
    admitted(ctx, c);
    return undefined;
  };

  const open = method.methodKind === "unary" ? calls.unary : calls.streams;
  const begin = (call: AnyCall) => {
    const started = process.hrtime.bigint();
    const ac = new AbortController();
    open.add(ac);
    const deadline = call.getDeadline();
    const ms = deadline instanceof Date ? deadline.getTime() - Date.now() : Number(deadline) - Date.now();
    const timer = Number.isFinite(ms) ? longTimeout(() => ac.abort(new DeadlineReason("deadline exceeded")), ms) : undefined;
    const onCancel = () => ac.abort(new CancelledError());
    call.on("cancelled", onCancel);
    const peer = call.getPeer();
    calls.onCall?.started(peer);
    observer?.started(labels);
    if (method.methodKind !== "bidi_streaming") observer?.received(labels);
    const endsAt = open === calls.streams ? calls.streamEndsAt?.(peer) : undefined;
    const aged = endsAt === undefined ? undefined : longTimeout(() => ac.abort(new ConnectionAgedError()), endsAt - Date.now());
    const ctx: CallContext = {
      signal: ac.signal,
      metadata: call.metadata,
      peer,
      method: name,
      abort: (err) => ac.abort(err),
      deadline: Number.isFinite(ms) ? Date.now() + ms : undefined,
      caller: OPEN_CALLER,
      logFields: {},
    };
    const traceId = traceIdOf(call.metadata);
    /** The stream holds a place in its service's budget (taken once admitted). */
    let budgeted = false;
    const finish = (code: grpc.status, err?: unknown) => {
      timer?.clear();
      aged?.clear();
      if (budgeted) budget!.open--;
      if (code === grpc.status.OK && okVouches) calls.onCall?.vouched(peer);
      calls.onCall?.ended(peer);
      call.removeListener("cancelled", onCancel);
      open.delete(ac);
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      observer?.handled(labels, grpcCodeLabel(code), durationMs / 1000);
      const entry = {
        method: name,
        code: grpc.status[code],
        durationMs: Math.round(durationMs * 1000) / 1000,
        peer: ctx.peer,
        trace_id: traceId,
        ...(ctx.caller.subject !== "" && { subject: ctx.caller.subject }),
        ...ctx.logFields,
      };
      if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) log.error({ ...entry, err }, "call failed");
      else log.info(entry, "call");
    };
    /** Takes the stream's place in its service's budget, or throws STREAM_LIMIT. */
    const takeStreamPlace = () => {
      if (!budget) return;
      if (budget.open >= budget.max) throw streamLimit(budget);
      budget.open++;
      budgeted = true;
    };
    return { ctx, finish, takeStreamPlace };
  };

  // When the call was aborted with a domain error (shutdown, overflow), that
  // is why it failed, whatever the handler threw on the way out.
  const fail = (err: unknown, signal: AbortSignal) => toServiceError(signal.aborted ? abortError(signal, err) : err);

  if (!fn) {
    return ((call: AnyCall, callback?: grpc.sendUnaryData<unknown>) => {
      const { finish } = begin(call);
      const err = { code: grpc.status.UNIMPLEMENTED, details: `${name} is not implemented by this server` };
      finish(err.code);
      if (callback) callback(err);
      else call.emit("error", err);
    }) as grpc.UntypedHandleCall;
  }

  switch (method.methodKind) {
    case "unary":
      return ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const { ctx, finish } = begin(call);
        (async () => {
          try {
            const admitting = admit(call, ctx);
            if (admitting) await admitting;
            if (call.request instanceof UndecodableRequest) throw call.request.error;
            const out = await (fn(call.request, ctx) as Promise<MessageInitShape<DescMessage>>);
            const msg = create(method.output, out);
            observer?.sent(labels);
            finish(grpc.status.OK);
            callback(null, msg);
          } catch (err) {
            const se = fail(err, ctx.signal);
            finish(se.code, err);
            callback(se);
          }
        })();
      }) as grpc.UntypedHandleCall;
    case "server_streaming":
    case "bidi_streaming":
      return ((call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
        const { ctx, finish, takeStreamPlace } = begin(call);
        (async () => {
          try {
            const admitting = admit(call, ctx);
            if (admitting) await admitting;
            const request = method.methodKind === "server_streaming" ? (call as grpc.ServerWritableStream<unknown, unknown>).request : undefined;
            if (request instanceof UndecodableRequest) throw request.error;
            takeStreamPlace();
            const source =
              method.methodKind === "server_streaming"
                ? fn(request, ctx)
                : fn(readRequests(call as grpc.ServerDuplexStream<unknown, unknown>, ctx.signal, () => observer?.received(labels)), ctx);
            if (source instanceof PushStream) {
              await (source as PushStream<MessageInitShape<DescMessage>>).run({
                write: (out, sent) => {
                  observer?.sent(labels);
                  return call.write(create(method.output, out), sent);
                },
                ready: () => drained(call, ctx.signal),
              });
            } else {
              for await (const out of source as AsyncIterable<MessageInitShape<DescMessage>>) {
                observer?.sent(labels);
                if (!call.write(create(method.output, out))) await drained(call, ctx.signal);
              }
            }
            if (ctx.signal.aborted && ctx.signal.reason instanceof DomainError) throw ctx.signal.reason;
            finish(grpc.status.OK);
            call.end();
          } catch (err) {
            const se = fail(err, ctx.signal);
            finish(se.code, err);
            call.emit("error", se);
          }
        })();
      }) as grpc.UntypedHandleCall;
    default:
      throw new Error(`${name}: ${method.methodKind} methods are not supported`);
  }
}

/** W3C trace context: version-traceid-parentid-flags. */
const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The call's W3C trace id (traceparent metadata), or a new random one, for its log line. */
function traceIdOf(metadata: grpc.Metadata): string {
  const tp = metadata.get("traceparent")[0];
  const m = typeof tp === "string" ? TRACEPARENT.exec(tp.trim().toLowerCase()) : null;
  // randomUUID draws from a cached entropy pool: randomBytes(16) cost about 12 µs a call.
  return m && m[1] !== "0".repeat(32) ? m[1]! : randomUUID().replaceAll("-", "");
}

const streamLimit = (b: StreamBudget) =>
  new ResourceExhaustedError("STREAM_LIMIT", `the server has ${b.max} ${b.what} open, its limit (${b.setting}); retry with backoff`, {
    limit: String(b.max),
  });

/** The requests of a bidi call as an async iterable that ends with the call. */
async function* readRequests(call: grpc.ServerDuplexStream<unknown, unknown>, signal: AbortSignal, onMessage: () => void): AsyncIterable<unknown> {
  // Not call[Symbol.asyncIterator](): at the end of the requests it destroys
  // the stream, and a destroyed stream never sends its status (grpc-js sends
  // it in _final).
  const it = call.iterator({ destroyOnReturn: false })[Symbol.asyncIterator]();
  const aborted = new Promise<IteratorResult<unknown>>((resolve) => {
    if (signal.aborted) resolve({ done: true, value: undefined });
    signal.addEventListener("abort", () => resolve({ done: true, value: undefined }), { once: true });
  });
  for (;;) {
    const r = await Promise.race([it.next(), aborted]);
    if (r.done) return;
    if (r.value instanceof UndecodableRequest) throw r.value.error;
    onMessage();
    yield r.value;
  }
}

/** Resolves at the call's next "drain"; rejects with the signal's reason once it aborts. */
async function drained(call: NodeJS.EventEmitter, signal: AbortSignal): Promise<void> {
  try {
    await once(call, "drain", { signal });
  } catch (err) {
    throw signal.aborted ? signal.reason : err;
  }
}
