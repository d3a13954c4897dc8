// A typed, promise-based client for any protobuf-es service over grpc-js:
// the TypeScript counterpart of the stubs other languages generate.
//
//   const client = createClient(StateService, "127.0.0.1:50051");
//   const { task } = await client.getTask({ taskId }, { deadlineMs: 5000 });
//   for await (const res of client.someStream({ ... })) { ... }
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { create, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { grpcDefinition } from "../contract/definition.js";

export interface TlsClientOptions {
  /** PEM CA to verify the server with (default: the system's CAs). */
  caFile?: string;
  /** PEM client certificate and key, for a server that requires mutual TLS. */
  certFile?: string;
  keyFile?: string;
}

/** Channel credentials for a TLS server (createClient's third argument). */
export function tlsCredentials(o: TlsClientOptions = {}): grpc.ChannelCredentials {
  if (!!o.certFile !== !!o.keyFile) throw new Error("a client certificate needs both certFile and keyFile");
  const read = (f: string | undefined) => (f ? readFileSync(f) : null);
  return grpc.credentials.createSsl(read(o.caFile), read(o.keyFile), read(o.certFile));
}

export interface CallOptions {
  /** Relative deadline in milliseconds. */
  deadlineMs?: number;
  metadata?: grpc.Metadata;
  /** Cancels the call when aborted. */
  signal?: AbortSignal;
}

type In<M extends Pick<DescMethod, "input">> = MessageInitShape<M["input"]>;
type Out<M extends Pick<DescMethod, "output">> = MessageShape<M["output"]>;

export type Client<S extends GenServiceMethods> = {
  [K in keyof S]: S[K]["methodKind"] extends "unary"
    ? (req: In<S[K]>, opts?: CallOptions) => Promise<Out<S[K]>>
    : S[K]["methodKind"] extends "server_streaming"
      ? (req: In<S[K]>, opts?: CallOptions) => grpc.ClientReadableStream<Out<S[K]>> & AsyncIterable<Out<S[K]>>
      : S[K]["methodKind"] extends "bidi_streaming"
        ? (opts?: CallOptions) => grpc.ClientDuplexStream<In<S[K]>, Out<S[K]>>
        : never;
} & { close(): void; channel: grpc.Client };

export function createClient<S extends GenServiceMethods>(
  service: GenService<S>,
  address: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  options: grpc.ClientOptions = {},
  /** A bearer token sent as `authorization: Bearer <token>` on every call. */
  auth: { token?: string } = {},
): Client<S> {
  const Ctor = grpc.makeGenericClientConstructor(grpcDefinition(service), service.typeName);
  const raw = new Ctor(address, credentials, options) as unknown as Record<string, (...a: unknown[]) => unknown> & grpc.Client;
  const out: Record<string, unknown> = { close: () => raw.close(), channel: raw };
  /** The call's metadata, with the client's token unless the call sets its own authorization. */
  const withAuth = (md: grpc.Metadata | undefined): grpc.Metadata => {
    const out = md ? md.clone() : new grpc.Metadata();
    if (auth.token && out.get("authorization").length === 0) out.set("authorization", `Bearer ${auth.token}`);
    return out;
  };
  for (const method of service.methods) {
    const callOpts = (o?: CallOptions): grpc.CallOptions => (o?.deadlineMs !== undefined ? { deadline: new Date(Date.now() + o.deadlineMs) } : {});
    const fn = raw[method.localName]!.bind(raw);
    switch (method.methodKind) {
      case "unary":
        out[method.localName] = (req: MessageInitShape<DescMethod["input"]>, o?: CallOptions) =>
          new Promise((resolve, reject) => {
            let done = false;
            let unlink = () => {};
            const call = fn(create(method.input, req), withAuth(o?.metadata), callOpts(o), (err: unknown, res: unknown) => {
              done = true;
              unlink();
              if (err) reject(err);
              else resolve(res);
            }) as grpc.ClientUnaryCall;
            if (!done) unlink = cancelOnAbort(call, o?.signal);
          });
        break;
      case "server_streaming":
        out[method.localName] = (req: MessageInitShape<DescMethod["input"]>, o?: CallOptions) => {
          const call = fn(create(method.input, req), withAuth(o?.metadata), callOpts(o)) as grpc.ClientReadableStream<unknown>;
          call.once("status", cancelOnAbort(call, o?.signal));
          // Leaving a for-await loop early destroys the stream: cancel the call
          // too, so the server stops sending (a no-op once the call is over).
          call.once("close", () => call.cancel());
          return call;
        };
        break;
      case "bidi_streaming":
        out[method.localName] = (o?: CallOptions) => {
          const call = fn(withAuth(o?.metadata), callOpts(o)) as grpc.ClientDuplexStream<unknown, unknown>;
          call.once("status", cancelOnAbort(call, o?.signal));
          return call;
        };
        break;
      default:
        break;
    }
  }
  return out as Client<S>;
}

/**
 * Cancels `call` when `signal` aborts (at once if it already has); returns
 * the function that removes the listener, to be called when the call ends.
 * A listener left behind would outlive its call: a long-lived signal shared
 * by many calls (an elector's, a watch's) would gather one per call.
 */
function cancelOnAbort(call: { cancel(): void }, signal: AbortSignal | undefined): () => void {
  if (!signal) return () => {};
  if (signal.aborted) {
    call.cancel();
    return () => {};
  }
  const onAbort = () => call.cancel();
  signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}
