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

type StreamCall = grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>;

/** What the edge knows of one method, fixed when its service is added. */
interface MethodEdge {
  method: DescMethod;
  /** "package.Service/Method", for ctx.method and the log line. */
  name: string;
  labels: MethodLabels;
  log: Logger;
  calls: OpenCalls;
  edge: ServiceEdge;
  /** Where its open calls' controllers are kept: calls.unary or calls.streams. */
  open: Set<AbortController>;
}

/** The grpc-js handler of one method: its handler's kind of call, or UNIMPLEMENTED without one. */
function makeHandler(
  method: DescMethod,
  fn: ((...a: unknown[]) => unknown) | undefined,
  log: Logger,
  calls: OpenCalls,
  edge: ServiceEdge,
): grpc.UntypedHandleCall {
  const m: MethodEdge = {
    method,
    name: `${method.parent.typeName}/${method.name}`,
    labels: {
      grpc_service: method.parent.typeName,
      grpc_method: method.name,
      grpc_type: method.methodKind === "unary" ? "unary" : method.methodKind === "server_streaming" ? "server_stream" : "bidi_stream",
    },
    log,
    calls,
    edge,
    open: method.methodKind === "unary" ? calls.unary : calls.streams,
  };
  if (!fn) return unimplemented(m);
  switch (method.methodKind) {
    case "unary":
      return unaryHandler(m, fn);
    case "server_streaming":
    case "bidi_streaming":
      return streamingHandler(m, fn);
    default:
      throw new Error(`${m.name}: ${method.methodKind} methods are not supported`);
  }
}

/** A method without a handler: UNIMPLEMENTED, counted and logged as any call. */
function unimplemented(m: MethodEdge): grpc.UntypedHandleCall {
  return ((call: AnyCall, callback?: grpc.sendUnaryData<unknown>) => {
    const open = new OpenCall(m, call);
    const err = { code: grpc.status.UNIMPLEMENTED, details: `${m.name} is not implemented by this server` };
    open.finish(err.code);
    if (callback) callback(err);
    else call.emit("error", err);
  }) as grpc.UntypedHandleCall;
}

function unaryHandler(m: MethodEdge, fn: (...a: unknown[]) => unknown): grpc.UntypedHandleCall {
  return ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
    const open = new OpenCall(m, call);
    const { ctx } = open;
    (async () => {
      try {
        const admitting = open.admit();
        if (admitting) await admitting;
        if (call.request instanceof UndecodableRequest) throw call.request.error;
        const out = await (fn(call.request, ctx) as Promise<MessageInitShape<DescMessage>>);
        const msg = create(m.method.output, out);
        m.calls.observer?.sent(m.labels);
        open.finish(grpc.status.OK);
        callback(null, msg);
      } catch (err) {
        const se = open.failure(err);
        open.finish(se.code, err);
        callback(se);
      }
    })();
  }) as grpc.UntypedHandleCall;
}

function streamingHandler(m: MethodEdge, fn: (...a: unknown[]) => unknown): grpc.UntypedHandleCall {
  const observer = m.calls.observer;
  return ((call: StreamCall) => {
    const open = new OpenCall(m, call);
    const { ctx } = open;
    (async () => {
      try {
        const admitting = open.admit();
        if (admitting) await admitting;
        const request = m.method.methodKind === "server_streaming" ? (call as grpc.ServerWritableStream<unknown, unknown>).request : undefined;
        if (request instanceof UndecodableRequest) throw request.error;
        open.takeStreamPlace();
        const source =
          m.method.methodKind === "server_streaming"
            ? fn(request, ctx)
            : fn(
                readRequests(call as grpc.ServerDuplexStream<unknown, unknown>, ctx.signal, () => observer?.received(m.labels)),
                ctx,
              );
        await writeResponses(m, call, ctx.signal, source);
        if (ctx.signal.aborted && ctx.signal.reason instanceof DomainError) throw ctx.signal.reason;
        open.finish(grpc.status.OK);
        call.end();
      } catch (err) {
        const se = open.failure(err);
        open.finish(se.code, err);
        call.emit("error", se);
      }
    })();
  }) as grpc.UntypedHandleCall;
}

/** Writes what a streaming handler produces (a PushStream or an async iterable), waiting for "drain" when the call's buffer is full. */
async function writeResponses(m: MethodEdge, call: StreamCall, signal: AbortSignal, source: unknown): Promise<void> {
  const observer = m.calls.observer;
  if (source instanceof PushStream) {
    await (source as PushStream<MessageInitShape<DescMessage>>).run({
      write: (out, sent) => {
        observer?.sent(m.labels);
        return call.write(create(m.method.output, out), sent);
      },
      ready: () => drained(call, signal),
    });
    return;
  }
  for await (const out of source as AsyncIterable<MessageInitShape<DescMessage>>) {
    observer?.sent(m.labels);
    if (!call.write(create(m.method.output, out))) await drained(call, signal);
  }
}

/**
 * One call from its start to its answer: its signal (the deadline, the
 * client's cancellation, the connection's age, shutdown), the context its
 * handler gets, its caller (the guard), its place in the stream budget, and
 * its end (idle tracking, metrics, its log line).
 */
class OpenCall {
  readonly ctx: CallContext;
  private readonly m: MethodEdge;
  private readonly call: AnyCall;
  private readonly started = process.hrtime.bigint();
  private readonly ac = new AbortController();
  private readonly timer: { clear(): void } | undefined;
  private readonly aged: { clear(): void } | undefined;
  private readonly onCancel = () => this.ac.abort(new CancelledError());
  private readonly peer: string;
  private readonly traceId: string;
  /** The stream holds a place in its service's budget (taken once admitted). */
  private budgeted = false;

  constructor(m: MethodEdge, call: AnyCall) {
    this.m = m;
    this.call = call;
    const { ac } = this;
    m.open.add(ac);
    const deadline = call.getDeadline();
    const ms = deadline instanceof Date ? deadline.getTime() - Date.now() : Number(deadline) - Date.now();
    this.timer = Number.isFinite(ms) ? longTimeout(() => ac.abort(new DeadlineReason("deadline exceeded")), ms) : undefined;
    call.on("cancelled", this.onCancel);
    const peer = call.getPeer();
    this.peer = peer;
    m.calls.onCall?.started(peer);
    m.calls.observer?.started(m.labels);
    if (m.method.methodKind !== "bidi_streaming") m.calls.observer?.received(m.labels);
    const endsAt = m.open === m.calls.streams ? m.calls.streamEndsAt?.(peer) : undefined;
    this.aged = endsAt === undefined ? undefined : longTimeout(() => ac.abort(new ConnectionAgedError()), endsAt - Date.now());
    this.ctx = {
      signal: ac.signal,
      metadata: call.metadata,
      peer,
      method: m.name,
      abort: (err) => ac.abort(err),
      deadline: Number.isFinite(ms) ? Date.now() + ms : undefined,
      caller: OPEN_CALLER,
      logFields: {},
    };
    this.traceId = traceIdOf(call.metadata);
  }

  /** Runs the guard; a synchronous one (no guard, a token file lookup) costs no extra turn. */
  admit(): Promise<void> | undefined {
    const { guard } = this.m.edge;
    if (!guard) {
      this.admitted(OPEN_CALLER);
      return undefined;
    }
    const c = guard(this.call, this.m.method, this.ctx.signal);
    if (c instanceof Promise) return c.then((caller) => this.admitted(caller));
    this.admitted(c);
    return undefined;
  }

  /** Admitted with a caller who holds a role (authenticated, or any caller without authentication): the connection is vouched for. */
  private admitted(caller: Caller): void {
    this.ctx.caller = caller;
    if (caller.roles.length > 0) this.m.calls.onCall?.vouched(this.ctx.peer);
  }

  /** Takes the stream's place in its service's budget, or throws STREAM_LIMIT. */
  takeStreamPlace(): void {
    const budget = this.m.edge.streams;
    if (!budget) return;
    if (budget.open >= budget.max) throw streamLimit(budget);
    budget.open++;
    this.budgeted = true;
  }

  /**
   * The status `err` answers the call with. When the call was aborted with a
   * domain error (shutdown, overflow), that is why it failed, whatever the
   * handler threw on the way out.
   */
  failure(err: unknown): grpc.ServiceError {
    const { signal } = this.ctx;
    return toServiceError(signal.aborted ? abortError(signal, err) : err);
  }

  /** Ends the call's bookkeeping with its status: timers, budget, idle tracking, metrics, and its log line. */
  finish(code: grpc.status, err?: unknown): void {
    const { m, ctx } = this;
    this.timer?.clear();
    this.aged?.clear();
    if (this.budgeted) m.edge.streams!.open--;
    if (code === grpc.status.OK && m.edge.okVouches) m.calls.onCall?.vouched(this.peer);
    m.calls.onCall?.ended(this.peer);
    this.call.removeListener("cancelled", this.onCancel);
    m.open.delete(this.ac);
    const durationMs = Number(process.hrtime.bigint() - this.started) / 1e6;
    m.calls.observer?.handled(m.labels, grpcCodeLabel(code), durationMs / 1000);
    const entry = {
      method: m.name,
      code: grpc.status[code],
      durationMs: Math.round(durationMs * 1000) / 1000,
      peer: ctx.peer,
      trace_id: this.traceId,
      ...(ctx.caller.subject !== "" && { subject: ctx.caller.subject }),
      ...ctx.logFields,
    };
    if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) m.log.error({ ...entry, err }, "call failed");
    else m.log.info(entry, "call");
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
