// grpc-js service definitions of protobuf-es services, shared by the server
// (server/adapter.ts) and the client (client/client.ts).
import type * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../core/errors.js";

/** The grpc-js service definition of a protobuf-es service (used by server and client). */
export function grpcDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      originalName: method.name,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      // create() returns a message unchanged and completes a plain init object.
      requestSerialize: (msg: unknown) => Buffer.from(toBinary(method.input, create(method.input, msg as never))),
      requestDeserialize: (buf: Buffer) => decodeRequest(method.input, buf),
      responseSerialize: method.methodKind === "unary" ? (msg: unknown) => Buffer.from(toBinary(method.output, msg as never)) : cachedSerializer(method.output),
      responseDeserialize: (buf: Buffer) => fromBinary(method.output, buf),
    };
  }
  return definition;
}

/**
 * What requestDeserialize returns for bytes that are not a valid request
 * (truncated, wrong wire types, invalid UTF-8, nesting past the decoder's
 * recursion limit): grpc-js answers INTERNAL when a deserializer throws, so
 * the failure travels to makeHandler, which answers INVALID_ARGUMENT.
 */
export class UndecodableRequest {
  constructor(readonly error: InvalidArgumentError) {}
}

function decodeRequest(schema: DescMessage, buf: Buffer): unknown {
  try {
    return fromBinary(schema, buf);
  } catch (err) {
    const why = err instanceof Error ? err.message.slice(0, 200) : "undecodable";
    return new UndecodableRequest(InvalidArgumentError.field("", `the request is not a valid ${schema.typeName} (protobuf binary): ${why}`));
  }
}

/**
 * Streams may send one response object to many calls (a watch event fanned
 * out to every watcher of a task): serialize each object once. Keyed weakly,
 * so nothing outlives the object.
 */
function cachedSerializer(schema: DescMessage) {
  const cache = new WeakMap<object, Buffer>();
  return (msg: unknown) => {
    let buf = cache.get(msg as object);
    if (!buf) {
      buf = Buffer.from(toBinary(schema, msg as never));
      cache.set(msg as object, buf);
    }
    return buf;
  };
}
