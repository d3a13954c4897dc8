// The contract between the gRPC edge (server/adapter.ts) and the handlers
// (rpc/, server/health.ts, server/reflection.ts): what a handler is given
// and what shape it has. Types only; neither side's code.
import type * as grpc from "@grpc/grpc-js";
import type { DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { Caller } from "./caller.js";
import type { DomainError } from "../core/errors.js";
import type { PushStream } from "./push.js";

export interface CallContext {
  /** Aborted when the deadline passes, the client cancels or the server shuts down. */
  signal: AbortSignal;
  metadata: grpc.Metadata;
  peer: string;
  /** Full method name, e.g. drydock.statemgmt.v1.StateService/GetTask. */
  method: string;
  /** Ends the call with this error, even while it waits for a slow client. */
  abort(err: DomainError): void;
  /** The call's deadline (epoch ms), if the client set one. */
  deadline: number | undefined;
  /** Who is calling (set by the service's guard before the handler runs). */
  caller: Caller;
  /** Fields the handler adds to the call's log line, e.g. taskId. */
  logFields: Record<string, unknown>;
}

/**
 * The first step of every call of a service: who is calling, and may they
 * call this method? Throws a domain error (UNAUTHENTICATED, PERMISSION_DENIED,
 * UNAVAILABLE) to refuse the call. Without one, every caller is OPEN_CALLER.
 */
export type Guard = (call: GuardedCall, method: DescMethod, signal: AbortSignal) => Caller | Promise<Caller>;

/** What a guard may read of a call. */
export type GuardedCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, "metadata" | "getAuthContext" | "getPeer">;

type In<M extends DescMethod> = MessageShape<M["input"]>;
type Out<M extends DescMethod> = MessageInitShape<M["output"]>;

export type MethodImpl<M extends DescMethod> = M["methodKind"] extends "unary"
  ? (req: In<M>, ctx: CallContext) => Promise<Out<M>>
  : M["methodKind"] extends "server_streaming"
    ? (req: In<M>, ctx: CallContext) => AsyncIterable<Out<M>> | PushStream<Out<M>>
    : M["methodKind"] extends "bidi_streaming"
      ? (reqs: AsyncIterable<In<M>>, ctx: CallContext) => AsyncIterable<Out<M>>
      : never;

export type ServiceImpl<S extends GenServiceMethods> = {
  [K in keyof S]?: MethodImpl<S[K] & DescMethod>;
};

/** A method as metrics label it (go-grpc-prometheus's labels). */
export interface MethodLabels {
  grpc_service: string;
  grpc_method: string;
  grpc_type: "unary" | "server_stream" | "bidi_stream";
}

export interface CallObserver {
  started(m: MethodLabels): void;
  received(m: MethodLabels): void;
  sent(m: MethodLabels): void;
  handled(m: MethodLabels, code: string, seconds: number): void;
}
