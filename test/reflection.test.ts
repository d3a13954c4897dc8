// Server reflection (v1 and v1alpha), exercised the way grpcurl does: over the
// socket, through the bidi ServerReflectionInfo stream, rebuilding a registry
// from the returned FileDescriptorProtos alone.
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { create, createFileRegistry, fromBinary, type FileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { createClient } from "../src/client/client.js";
import { eventually, useServer } from "./kit/index.js";

/** The request, as a plain init object (valid for both versions: same fields). */
type Request = { host?: string; messageRequest: Exclude<v1.ServerReflectionRequest["messageRequest"], { case: undefined }> };
type Response = v1.ServerReflectionResponse | v1alpha.ServerReflectionResponse;

const SERVICES = [
  "drydock.statemgmt.v1.StateService",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

/** One open ServerReflectionInfo stream: ask() writes a request and awaits its response. */
class ReflectionStream {
  private readonly queued: Response[] = [];
  private readonly waiting: { resolve(r: Response): void; reject(e: unknown): void }[] = [];
  private failure: unknown;
  private readonly status: Promise<grpc.StatusObject>;

  constructor(
    private readonly call: grpc.ClientDuplexStream<unknown, Response>,
    private readonly requestSchema: typeof v1.ServerReflectionRequestSchema,
  ) {
    call.on("data", (r: Response) => {
      const w = this.waiting.shift();
      if (w) w.resolve(r);
      else this.queued.push(r);
    });
    const fail = (e: unknown) => {
      this.failure ??= e;
      this.waiting.splice(0).forEach((w) => w.reject(e));
    };
    call.on("error", fail);
    call.on("end", () => fail(new Error("reflection stream ended by the server")));
    this.status = new Promise((resolve) => call.on("status", resolve));
  }

  ask(req: Request): Promise<Response> {
    const p = new Promise<Response>((resolve, reject) => {
      const r = this.queued.shift();
      if (r) resolve(r);
      else if (this.failure) reject(this.failure);
      else this.waiting.push({ resolve, reject });
    });
    // A message, not the plain init object: the client's bidi streams hand what
    // is written straight to toBinary() (grpcDefinition's requestSerialize).
    this.call.write(create(this.requestSchema, req));
    return p;
  }

  /** Half-closes and waits for the server to finish the call (OK). */
  async end(): Promise<grpc.StatusObject> {
    this.call.end();
    try {
      return await eventually(this.status, 3000, "the server finishing the reflection call");
    } catch {
      this.call.cancel();
      throw new Error("the server did not finish the reflection call after the client half-closed it");
    }
  }
}

/** The FileDescriptorProtos of a file_descriptor_response, or a failure naming what came instead. */
function filesOf(res: Response): FileDescriptorProto[] {
  const m = res.messageResponse;
  if (m.case !== "fileDescriptorResponse") {
    throw new Error(`expected a file_descriptor_response, got ${m.case}: ${m.case === "errorResponse" ? m.value.errorMessage : ""}`);
  }
  expect(m.value.fileDescriptorProto).to.not.be.empty;
  return m.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
}

/**
 * What grpcurl does for one symbol: file_containing_symbol, then file_by_filename
 * for every dependency not returned yet, then a registry of it all (which
 * throws if any reference does not resolve).
 */
async function resolveSymbol(s: ReflectionStream, symbol: string): Promise<{ first: FileDescriptorProto; registry: FileRegistry; fetched: string[] }> {
  const files = new Map<string, FileDescriptorProto>();
  const add = (fs: FileDescriptorProto[]) => fs.forEach((f) => files.has(f.name) || files.set(f.name, f));
  const returned = filesOf(await s.ask({ messageRequest: { case: "fileContainingSymbol", value: symbol } }));
  add(returned);
  const fetched: string[] = [];
  for (;;) {
    const missing = [...files.values()].flatMap((f) => f.dependency).find((d) => !files.has(d));
    if (missing === undefined) break;
    const got = filesOf(await s.ask({ messageRequest: { case: "fileByFilename", value: missing } }));
    expect(got[0]!.name, `file_by_filename ${missing}`).to.equal(missing);
    fetched.push(missing);
    add(got);
  }
  // The server answers with the requested file first; createFileRegistry wants
  // every file after its dependencies (as protoc writes a FileDescriptorSet).
  const ordered: FileDescriptorProto[] = [];
  const place = (f: FileDescriptorProto) => {
    if (ordered.includes(f)) return;
    f.dependency.forEach((d) => place(files.get(d)!));
    ordered.push(f);
  };
  files.forEach(place);
  const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
  return { first: returned[0]!, registry, fetched };
}

const flavors = [
  { version: "v1", service: v1.ServerReflection, requestSchema: v1.ServerReflectionRequestSchema },
  { version: "v1alpha", service: v1alpha.ServerReflection, requestSchema: v1alpha.ServerReflectionRequestSchema },
] as const;

describe("server reflection", () => {
  const h = useServer();

  for (const { version, service, requestSchema } of flavors) {
    describe(`grpc.reflection.${version}`, () => {
      let client: { close(): void; serverReflectionInfo(o?: { deadlineMs?: number }): grpc.ClientDuplexStream<unknown, unknown> };
      before(() => {
        // Both versions' clients have the same shape apart from message type names.
        client = createClient(service as typeof v1.ServerReflection, h.server.address) as unknown as typeof client;
      });
      after(() => client?.close());

      /** Runs `fn` on a fresh stream and always closes it, checking the call ends OK. */
      const withStream = async (fn: (s: ReflectionStream) => Promise<void>) => {
        const s = new ReflectionStream(
          client.serverReflectionInfo({ deadlineMs: 20_000 }) as grpc.ClientDuplexStream<unknown, Response>,
          // Same fields and numbers in both versions.
          requestSchema as unknown as typeof v1.ServerReflectionRequestSchema,
        );
        let failed = true;
        try {
          await fn(s);
          failed = false;
        } finally {
          const st = await s.end().catch((e) => {
            if (!failed) throw e;
          });
          if (!failed) expect(grpc.status[st!.code], st!.details).to.equal("OK");
        }
      };

      it("lists exactly the services served", () =>
        withStream(async (s) => {
          const res = await s.ask({ host: "localhost", messageRequest: { case: "listServices", value: "*" } });
          expect(res.validHost).to.equal("localhost");
          expect(res.originalRequest?.messageRequest.case).to.equal("listServices");
          const m = res.messageResponse;
          expect(m.case).to.equal("listServicesResponse");
          if (m.case !== "listServicesResponse") return;
          const names = m.value.service.map((x) => x.name);
          expect(names).to.have.members(SERVICES);
          expect(names).to.have.lengthOf(SERVICES.length);
        }));

      it("resolves every listed service completely from file_containing_symbol (+ file_by_filename for missing dependencies)", () =>
        withStream(async (s) => {
          const listed = await s.ask({ messageRequest: { case: "listServices", value: "" } });
          const m = listed.messageResponse;
          if (m.case !== "listServicesResponse") throw new Error(`list_services answered ${m.case}`);
          // The descriptors compiled into this test, to compare the reflected ones with.
          const compiled = new Map<string, { methods: readonly { name: string; input: { typeName: string }; output: { typeName: string } }[] }>([
            [StateService.typeName, StateService],
            [Health.typeName, Health],
            [v1.ServerReflection.typeName, v1.ServerReflection],
            [v1alpha.ServerReflection.typeName, v1alpha.ServerReflection],
          ]);
          for (const { name } of m.value.service) {
            const { registry } = await resolveSymbol(s, name);
            const svc = registry.getService(name);
            expect(svc, `service ${name} in the reflected registry`).to.exist;
            const want = compiled.get(name)!;
            expect(
              svc!.methods.map((x) => x.name),
              name,
            ).to.deep.equal(want.methods.map((x) => x.name));
            for (const method of svc!.methods) {
              const w = want.methods.find((x) => x.name === method.name)!;
              expect(method.input.typeName, `${name}.${method.name} input`).to.equal(w.input.typeName);
              expect(method.output.typeName, `${name}.${method.name} output`).to.equal(w.output.typeName);
              // Resolved to real message descriptors, fields and all.
              expect(registry.getMessage(method.input.typeName), method.input.typeName).to.equal(method.input);
              expect(registry.getMessage(method.output.typeName), method.output.typeName).to.equal(method.output);
            }
            if (name === StateService.typeName) {
              const byName = (n: string) => svc!.methods.find((x) => x.name === n)!;
              expect(byName("CreateTask").input.typeName).to.equal("drydock.statemgmt.v1.CreateTaskRequest");
              expect(byName("CreateTask").output.typeName).to.equal("drydock.statemgmt.v1.CreateTaskResponse");
              expect(byName("GetTask").input.typeName).to.equal("drydock.statemgmt.v1.GetTaskRequest");
              expect(byName("GetTask").output.typeName).to.equal("drydock.statemgmt.v1.GetTaskResponse");
              expect(byName("UpdateTask").input.typeName).to.equal("drydock.statemgmt.v1.UpdateTaskRequest");
              expect(byName("ClaimNextTask").output.typeName).to.equal("drydock.statemgmt.v1.ClaimNextTaskResponse");
              const fieldType = (msg: string, field: string) => {
                const f = registry.getMessage(msg)?.fields.find((x) => x.name === field);
                expect(f, `${msg}.${field}`).to.exist;
                expect(f!.fieldKind, `${msg}.${field}`).to.equal("message");
                return f!.fieldKind === "message" ? f!.message.typeName : undefined;
              };
              expect(fieldType("drydock.statemgmt.v1.Task", "created")).to.equal("google.protobuf.Timestamp");
              expect(fieldType("drydock.statemgmt.v1.Task", "request_context")).to.equal("google.protobuf.Struct");
              expect(fieldType("drydock.statemgmt.v1.CreateTaskRequest", "request_context")).to.equal("google.protobuf.Struct");
              expect(fieldType("drydock.statemgmt.v1.UpdateTaskRequest", "update_mask")).to.equal("google.protobuf.FieldMask");
              expect(fieldType("drydock.statemgmt.v1.GetTaskResponse", "task")).to.equal("drydock.statemgmt.v1.Task");
              // The well-known types came back with their fields, not as empty stubs.
              expect(registry.getMessage("google.protobuf.Timestamp")!.fields.map((f) => f.name)).to.deep.equal(["seconds", "nanos"]);
              expect(registry.getMessage("google.protobuf.FieldMask")!.fields.map((f) => f.name)).to.deep.equal(["paths"]);
            }
          }
        }));

      it("answers file_by_filename for each dependency of the service file", () =>
        withStream(async (s) => {
          for (const name of [
            "drydock/statemgmt/v1/state_service.proto",
            "drydock/statemgmt/v1/task.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/field_mask.proto",
          ]) {
            const files = filesOf(await s.ask({ messageRequest: { case: "fileByFilename", value: name } }));
            expect(files[0]!.name).to.equal(name);
          }
        }));

      it("answers NOT_FOUND (5) in an error_response for an unknown symbol, and the stream goes on", () =>
        withStream(async (s) => {
          for (const req of [
            { case: "fileContainingSymbol", value: "drydock.statemgmt.v1.NoSuchThing" },
            { case: "fileContainingSymbol", value: "drydock.statemgmt.v1.StateService.NoSuchMethod" },
            { case: "fileByFilename", value: "no/such/file.proto" },
          ] as const) {
            const res = await s.ask({ messageRequest: req });
            const m = res.messageResponse;
            expect(m.case, `${req.case} ${req.value}`).to.equal("errorResponse");
            if (m.case !== "errorResponse") return;
            expect(m.value.errorCode).to.equal(grpc.status.NOT_FOUND);
            expect(m.value.errorMessage).to.contain(req.value);
          }
          // Still usable after the errors.
          const res = await s.ask({ messageRequest: { case: "listServices", value: "" } });
          expect(res.messageResponse.case).to.equal("listServicesResponse");
        }));

      it("finds the file of a message type, returning it first with its dependencies", () =>
        withStream(async (s) => {
          const { first, registry, fetched } = await resolveSymbol(s, "drydock.statemgmt.v1.Task");
          expect(first.name).to.equal("drydock/statemgmt/v1/task.proto");
          expect(fetched, "dependencies the server left out").to.be.empty;
          const task = registry.getMessage("drydock.statemgmt.v1.Task");
          expect(task).to.exist;
          const created = task!.fields.find((f) => f.name === "created")!;
          expect(created.fieldKind === "message" && created.message.typeName).to.equal("google.protobuf.Timestamp");
        }));

      it("finds the files of the error details' types (google.rpc.ErrorInfo, BadRequest, Status) with their dependencies", () =>
        withStream(async (s) => {
          for (const symbol of ["google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.BadRequest.FieldViolation"]) {
            const files = filesOf(await s.ask({ messageRequest: { case: "fileContainingSymbol", value: symbol } }));
            expect(
              files.map((f) => f.name),
              symbol,
            ).to.deep.equal(["google/rpc/error_details.proto", "google/protobuf/duration.proto"]);
          }
          const { first, registry, fetched } = await resolveSymbol(s, "google.rpc.ErrorInfo");
          expect(first.name).to.equal("google/rpc/error_details.proto");
          expect(fetched).to.be.empty;
          expect(registry.getMessage("google.rpc.ErrorInfo")!.fields.map((f) => f.name)).to.deep.equal(["reason", "domain", "metadata"]);
          const violation = registry.getMessage("google.rpc.BadRequest")!.fields.find((f) => f.name === "field_violations")!;
          expect(violation.fieldKind === "list" && violation.listKind === "message" && violation.message.typeName).to.equal(
            "google.rpc.BadRequest.FieldViolation",
          );
          const status = filesOf(await s.ask({ messageRequest: { case: "fileContainingSymbol", value: "google.rpc.Status" } }));
          expect(status.map((f) => f.name)).to.deep.equal(["google/rpc/status.proto", "google/protobuf/any.proto"]);
          // Not a service: list_services still names the four served.
          const listed = (await s.ask({ messageRequest: { case: "listServices", value: "" } })).messageResponse;
          expect(listed.case === "listServicesResponse" && listed.value.service.map((x) => x.name).sort()).to.deep.equal([...SERVICES].sort());
        }));

      it("finds the file of a method by its full name (and with a leading dot)", () =>
        withStream(async (s) => {
          for (const symbol of ["drydock.statemgmt.v1.StateService.GetTask", ".drydock.statemgmt.v1.StateService.GetTask"]) {
            const { first, registry, fetched } = await resolveSymbol(s, symbol);
            expect(first.name).to.equal("drydock/statemgmt/v1/state_service.proto");
            expect(fetched).to.be.empty;
            const getTask = registry.getService("drydock.statemgmt.v1.StateService")!.methods.find((m) => m.name === "GetTask")!;
            expect(getTask.input.typeName).to.equal("drydock.statemgmt.v1.GetTaskRequest");
            expect(getTask.output.typeName).to.equal("drydock.statemgmt.v1.GetTaskResponse");
          }
        }));
    });
  }
});
