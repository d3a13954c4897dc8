// The ceiling of grpc-js itself: a bare unary echo (bytes in, the same bytes
// out, no protobuf, no database), run as its own process like the service.
// Prints {"address": "..."} on stdout once it listens.
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
};

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!)) {
  const server = new grpc.Server();
  server.addService(echoDefinition, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
  });
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    console.log(JSON.stringify({ address: `127.0.0.1:${port}` }));
  });
  process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
}
