// A stand-in for grpcurl (fullstorydev/grpcurl 1.8), for test/readme.test.ts:
// grpcurl is a Go program that neither Debian 12 nor npm ships, so the test
// runs README's grpcurl lines through this instead (a `grpcurl` shim on PATH
// running `node dist/test/grpcurl.js "$@"`). It takes the part of grpcurl's
// command line README uses, and answers as grpcurl does:
//
//   grpcurl [-plaintext | -cacert FILE] [-H 'name: value']... [-d JSON] ADDR list
//   grpcurl ... ADDR describe SYMBOL
//   grpcurl ... ADDR SERVICE/METHOD   (or SERVICE.METHOD)
//
// - `list` and `describe` ask the server's reflection (grpc.reflection.v1), as
//   grpcurl does: a symbol the server does not serve fails. `describe` prints
//   the descriptor as proto text (close to grpcurl's, not byte for byte).
// - A request's JSON is parsed with protobuf-es fromJson on the descriptors in
//   gen/ (the server's own), with one exception kept on purpose: grpcurl 1.8
//   parses JSON with golang/protobuf's jsonpb over jhump/protoreflect dynamic
//   messages, which knows no special JSON form for google.protobuf.FieldMask
//   (fullstorydev/grpcurl#393): a mask must be written as the message it is,
//   {"paths":["status","result.status"]} (paths as the proto field names), and
//   proto3 JSON's string form "status,result.status" is refused. So here too:
//   a string mask fails the call before anything is sent; an object's paths are
//   taken as they are.
// - Responses print as grpcurl prints them: protojson with lowerCamelCase
//   names, enum names, default values left out, two-space indents, one JSON
//   document per message (a stream prints each as it arrives).
// - A failed call prints `ERROR:\n  Code: NotFound\n  Message: …` (and the
//   details, as JSON) on stderr and exits 64 + the status code, as grpcurl
//   1.8 does (`statusCodeOffset`); other failures (bad flags, JSON that does
//   not parse, no connection) exit 1 (2 for usage errors).
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import {
  createRegistry,
  fromBinary,
  fromJson,
  toBinary,
  toJsonString,
  create,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  type DescEnum,
  type DescFile,
  type JsonValue,
  type MessageShape,
} from "@bufbuild/protobuf";
import { anyUnpack, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection, ServerReflectionRequestSchema, ServerReflectionResponseSchema } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";

const SERVICES: DescService[] = [StateService, Health, ServerReflection];
/** Every type of the services' files and their imports (the server's own descriptors). */
function allFiles(files: DescFile[], seen = new Set<DescFile>()): DescFile[] {
  for (const f of files) {
    if (seen.has(f)) continue;
    seen.add(f);
    allFiles(f.dependencies, seen);
  }
  return [...seen];
}
const registry = createRegistry(...allFiles([...SERVICES.map((s) => s.file), ErrorInfoSchema.file]));

/** Go's codes.Code names, which grpcurl prints. */
const CODE_NAMES = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
];

function fail(msg: string, code = 1): never {
  process.stderr.write(`${msg}\n`);
  process.exit(code);
}

interface Args {
  plaintext: boolean;
  cacert?: string;
  headers: [string, string][];
  data?: string;
  rest: string[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { plaintext: false, headers: [], rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`flag needs an argument: ${arg}`, 2);
      return argv[++i];
    };
    if (arg === "-plaintext" || arg === "--plaintext") a.plaintext = true;
    else if (arg === "-cacert" || arg === "--cacert") a.cacert = value();
    else if (arg === "-H" || arg === "--H") {
      const h = value();
      const colon = h.indexOf(":");
      if (colon < 0) fail(`Failed to parse header ${JSON.stringify(h)}: missing ':'`, 2);
      a.headers.push([h.slice(0, colon).trim().toLowerCase(), h.slice(colon + 1).trim()]);
    } else if (arg === "-d" || arg === "--d") a.data = value();
    else if (arg.startsWith("-")) fail(`flag provided but not defined: ${arg} (test/grpcurl.ts knows only -plaintext, -cacert, -H, -d)`, 2);
    else a.rest.push(arg);
  }
  return a;
}

/** Refuses string FieldMasks and turns {"paths":[...]} into what protobuf-es parses (see the top). */
function fieldMasksAsGrpcurl(desc: DescMessage, json: JsonValue, where: string): JsonValue {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return json;
  const out: { [k: string]: JsonValue } = {};
  for (const [key, value] of Object.entries(json)) {
    const field = desc.fields.find((f) => f.name === key || f.jsonName === key);
    out[key] = field ? fieldValue(field, value, `${where}.${key}`) : value;
  }
  return out;
}

function fieldValue(field: DescField, value: JsonValue, where: string): JsonValue {
  if (field.fieldKind === "message") {
    const m = field.message;
    const one = (v: JsonValue, w: string) => (m.typeName === FieldMaskSchema.typeName ? maskValue(v, w) : fieldMasksAsGrpcurl(m, v, w));
    return Array.isArray(value) ? value.map((v, i) => one(v, `${where}[${i}]`)) : one(value, where);
  }
  if (field.fieldKind === "map" && field.mapKind === "message" && value && typeof value === "object" && !Array.isArray(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fieldMasksAsGrpcurl(field.message, v, `${where}[${k}]`)]));
  }
  return value;
}

function maskValue(value: JsonValue, where: string): JsonValue {
  if (value === null) return value;
  if (typeof value !== "object" || Array.isArray(value)) {
    // What jsonpb says when a message field holds a string.
    throw new Error(
      `${where}: bad input: expecting JSON object for google.protobuf.FieldMask, got ${JSON.stringify(value)} (fullstorydev/grpcurl#393: write {"paths":[...]})`,
    );
  }
  const paths = (value as { paths?: JsonValue }).paths ?? [];
  if (!Array.isArray(paths) || paths.some((p) => typeof p !== "string")) throw new Error(`${where}.paths: expecting an array of strings`);
  // protobuf-es parses a FieldMask from its proto3 JSON string (lowerCamelCase
  // paths); give it the same paths in that form.
  const camel = (p: string) => p.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  return (paths as string[]).map((p) => p.split(".").map(camel).join(".")).join(",");
}

function credentials(a: Args): grpc.ChannelCredentials {
  if (a.plaintext) {
    if (a.cacert) fail("The -cacert argument can only be used with TLS.", 2);
    return grpc.credentials.createInsecure();
  }
  return grpc.credentials.createSsl(a.cacert ? readFileSync(a.cacert) : null);
}

function metadata(a: Args): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of a.headers) md.add(k, v);
  return md;
}

function printStatus(err: grpc.ServiceError): never {
  const lines = ["ERROR:", `  Code: ${CODE_NAMES[err.code] ?? err.code}`, `  Message: ${err.details}`];
  const bin = err.metadata?.get("grpc-status-details-bin")?.[0];
  if (bin instanceof Buffer) {
    const details = fromBinary(StatusSchema, bin).details;
    if (details.length > 0) {
      lines.push("  Details:");
      details.forEach((any, i) => {
        const msg = anyUnpack(any, registry);
        const body = msg
          ? JSON.stringify(
              {
                "@type": `type.googleapis.com/${any.typeUrl.split("/").pop()}`,
                ...(JSON.parse(toJsonString(registry.getMessage(msg.$typeName)!, msg)) as object),
              },
              null,
              2,
            )
          : JSON.stringify({ "@type": any.typeUrl }, null, 2);
        lines.push(`  ${i + 1})\t${body.split("\n").join("\n    \t")}`);
      });
    }
  }
  process.stderr.write(`${lines.join("\n")}\n`);
  process.exit(64 + err.code);
}

/** One grpc.reflection.v1 request, answered by the server. */
async function reflect(client: grpc.Client, md: grpc.Metadata, req: Parameters<typeof create<typeof ServerReflectionRequestSchema>>[1]) {
  const call = client.makeBidiStreamRequest(
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    (m: Uint8Array) => Buffer.from(m),
    (b: Buffer) => fromBinary(ServerReflectionResponseSchema, b),
    md,
  );
  return new Promise<ReturnType<typeof fromBinary<typeof ServerReflectionResponseSchema>>>((resolve, reject) => {
    call.on("data", (res) => {
      resolve(res);
      call.end();
    });
    call.on("error", reject);
    call.write(toBinary(ServerReflectionRequestSchema, create(ServerReflectionRequestSchema, req)));
  });
}

function typeRef(f: DescField): string {
  switch (f.fieldKind) {
    case "map":
      return `map<${scalarName(f.mapKey)}, ${f.mapKind === "message" ? `.${f.message.typeName}` : f.mapKind === "enum" ? `.${f.enum.typeName}` : scalarName(f.scalar)}>`;
    case "list":
      return `repeated ${f.listKind === "message" ? `.${f.message.typeName}` : f.listKind === "enum" ? `.${f.enum.typeName}` : scalarName(f.scalar)}`;
    case "message":
      return `.${f.message.typeName}`;
    case "enum":
      return `.${f.enum.typeName}`;
    default:
      return scalarName(f.scalar);
  }
}
function scalarName(t: number): string {
  return (
    [
      "",
      "double",
      "float",
      "int64",
      "uint64",
      "int32",
      "fixed64",
      "fixed32",
      "bool",
      "string",
      "group",
      "message",
      "bytes",
      "uint32",
      "enum",
      "sfixed32",
      "sfixed64",
      "sint32",
      "sint64",
    ][t] ?? String(t)
  );
}

function describeText(name: string): string | undefined {
  const svc = SERVICES.find((s) => s.typeName === name);
  if (svc) {
    const rpcs = svc.methods.map((m) => {
      const i = m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming" ? "stream " : "";
      const o = m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming" ? "stream " : "";
      return `  rpc ${m.name} ( ${i}.${m.input.typeName} ) returns ( ${o}.${m.output.typeName} );`;
    });
    return `${name} is a service:\nservice ${svc.name} {\n${rpcs.join("\n")}\n}`;
  }
  const t = registry.get(name) ?? undefined;
  if (t?.kind === "message") {
    const lines: string[] = [];
    const oneofs = new Set<string>();
    for (const f of t.fields) {
      if (f.oneof && !f.oneof.proto.name.startsWith("_")) {
        if (oneofs.has(f.oneof.name)) continue;
        oneofs.add(f.oneof.name);
        lines.push(`  oneof ${f.oneof.name} {`);
        for (const g of f.oneof.fields) lines.push(`    ${typeRef(g)} ${g.name} = ${g.number};`);
        lines.push("  }");
      } else {
        lines.push(`  ${f.proto.proto3Optional ? "optional " : ""}${typeRef(f)} ${f.name} = ${f.number};`);
      }
    }
    return `${name} is a message:\nmessage ${t.name} {\n${lines.join("\n")}\n}`;
  }
  if (t?.kind === "enum") {
    const e = t as DescEnum;
    return `${name} is an enum:\nenum ${e.name} {\n${e.values.map((v) => `  ${v.name} = ${v.number};`).join("\n")}\n}`;
  }
  return undefined;
}

function findMethod(symbol: string): DescMethod | undefined {
  const cut = symbol.includes("/") ? symbol.lastIndexOf("/") : symbol.lastIndexOf(".");
  const svc = SERVICES.find((s) => s.typeName === symbol.slice(0, cut));
  return svc?.methods.find((m) => m.name === symbol.slice(cut + 1));
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (a.rest.length < 2) fail("Too few arguments.\nTry 'grpcurl -help' for more details.", 2);
  const [addr, verb, symbol] = a.rest;
  const client = new grpc.Client(addr, credentials(a));
  const md = metadata(a);

  if (verb === "list" || verb === "describe") {
    if (verb === "list" && symbol === undefined) {
      const res = await reflect(client, md, { messageRequest: { case: "listServices", value: "" } }).catch((e: grpc.ServiceError) =>
        fail(`Failed to list services: ${e.details ?? e.message}`),
      );
      if (res.messageResponse.case !== "listServicesResponse") fail("Failed to list services: unexpected reflection response");
      const names = res.messageResponse.value.service.map((s) => s.name).sort();
      process.stdout.write(`${names.join("\n")}\n`);
    } else {
      const name = (symbol ?? fail("describe without a symbol is not supported by test/grpcurl.ts", 2)).replace(/^\./, "");
      const res = await reflect(client, md, { messageRequest: { case: "fileContainingSymbol", value: name } }).catch((e: grpc.ServiceError) =>
        fail(`Failed to resolve symbol ${JSON.stringify(name)}: ${e.details ?? e.message}`),
      );
      if (res.messageResponse.case === "errorResponse") fail(`Failed to resolve symbol ${JSON.stringify(name)}: Symbol not found: ${name}`);
      if (verb === "list") {
        const svc = SERVICES.find((s) => s.typeName === name) ?? fail(`Failed to list methods for service ${JSON.stringify(name)}`);
        process.stdout.write(`${svc.methods.map((m) => `${name}.${m.name}`).join("\n")}\n`);
      } else {
        const text = describeText(name) ?? fail(`Failed to resolve symbol ${JSON.stringify(name)}: not in gen/ (test/grpcurl.ts)`);
        process.stdout.write(`${text}\n`);
      }
    }
    client.close();
    return;
  }

  const method = findMethod(verb);
  if (!method) fail(`Error invoking method ${JSON.stringify(verb)}: target server does not expose service ${JSON.stringify(verb.replace(/[/.][^/.]*$/, ""))}`);
  let request: MessageShape<DescMessage>;
  try {
    const json = a.data === undefined || a.data.trim() === "" ? {} : (JSON.parse(a.data) as JsonValue);
    request = fromJson(method.input, fieldMasksAsGrpcurl(method.input, json, method.input.typeName), { registry });
  } catch (e) {
    fail(`Error invoking method ${JSON.stringify(verb)}: error getting request data: ${(e as Error).message}`);
  }
  const path = `/${method.parent.typeName}/${method.name}`;
  const serialize = (m: typeof request) => Buffer.from(toBinary(method.input, m));
  const deserialize = (b: Buffer) => fromBinary(method.output, b);
  const print = (m: ReturnType<typeof deserialize>) => process.stdout.write(`${toJsonString(method.output, m, { registry, prettySpaces: 2 })}\n`);

  if (method.methodKind === "unary") {
    await new Promise<void>((resolve) => {
      client.makeUnaryRequest(path, serialize, deserialize, request, md, (err, res) => {
        if (err) printStatus(err);
        print(res!);
        resolve();
      });
    });
  } else if (method.methodKind === "server_streaming") {
    const call = client.makeServerStreamRequest(path, serialize, deserialize, request, md);
    // Ctrl-C (or `timeout -s INT`) ends grpcurl's stream as a cancel: exit like grpcurl (130 from the shell).
    process.on("SIGINT", () => process.exit(130));
    await new Promise<void>((resolve) => {
      call.on("data", print);
      call.on("error", (err: grpc.ServiceError) => printStatus(err));
      call.on("end", resolve);
    });
  } else {
    fail(`test/grpcurl.ts does not call ${method.methodKind} methods`, 2);
  }
  client.close();
}

main().catch((e: Error) => fail(`Failed: ${e.message}`));
