// The ceiling of grpc-js itself, run as its own process like the service: a
// bare unary echo (bytes in, the same bytes out, no protobuf, no database),
// and a bare broadcast (Publish sends its bytes to every open Broadcast
// stream; the watch fan-out's ceiling). Prints {"address": "..."} on stdout
// once it listens.
import * as grpc from "@grpc/grpc-js";

const identity = (b: Buffer) => b;
export const echoDefinition: grpc.ServiceDefinition = {
  echo: {
    path: "/bench.Echo/Echo",
    originalName: "Echo",
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
  broadcast: {
    path: "/bench.Echo/Broadcast",
    originalName: "Broadcast",
    requestStream: false,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
  publish: {
    path: "/bench.Echo/Publish",
    originalName: "Publish",
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!)) {
  const server = new grpc.Server();
  const streams = new Set<grpc.ServerWritableStream<Buffer, Buffer>>();
  server.addService(echoDefinition, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
    broadcast: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      streams.add(call);
      call.write(Buffer.alloc(0)); // "subscribed"
      call.on("cancelled", () => streams.delete(call));
    },
    // Acknowledged first, then sent to the streams (on the next turn, once the
    // ack's status is out: grpc-js sends it when the response's write
    // completes), as the service acknowledges an append before its watchers
    // hear of it. Answered after the loop, the ack left after the streams'
    // bytes, and ack→recv did not include the loop's time.
    publish: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      cb(null, Buffer.alloc(0));
      setImmediate(() => {
        for (const stream of streams) stream.write(call.request);
      });
    },
  });
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    console.log(JSON.stringify({ address: `127.0.0.1:${port}` }));
  });
  process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
}
