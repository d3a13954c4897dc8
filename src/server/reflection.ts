// gRPC server reflection (v1 and v1alpha), served from the protobuf-es
// descriptors compiled into the server. Every answer carries the requested
// file and all its transitive dependencies, so clients such as grpcurl can
// resolve every reference (google.protobuf.Timestamp, Struct, ...), which
// @grpc/reflection 1.0.x fails to do.
import { create, fromBinary, toBinary, type DescFile, type DescMessage, type DescEnum } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { ServiceImpl } from "../contract/contract.js";

type V1Methods = typeof v1.ServerReflection extends { method: infer M } ? M : never;
type V1AlphaMethods = typeof v1alpha.ServerReflection extends { method: infer M } ? M : never;

const NOT_FOUND = 5;
const UNIMPLEMENTED = 12;

export class ReflectionIndex {
  private readonly byName = new Map<string, DescFile>();
  private readonly bySymbol = new Map<string, DescFile>();
  private readonly encoded = new Map<DescFile, Uint8Array>();

  /**
   * `files`: the files of the services served; `more`: files of other types
   * clients must be able to look up (the error details, whose Any type URLs
   * grpcurl resolves through file_containing_symbol). Dependencies are found
   * on their own.
   */
  constructor(
    readonly serviceNames: string[],
    files: DescFile[],
    more: DescFile[] = [],
  ) {
    const visit = (f: DescFile) => {
      if (this.byName.has(f.proto.name)) return;
      this.byName.set(f.proto.name, f);
      this.encoded.set(f, toBinary(FileDescriptorProtoSchema, f.proto));
      if (f.proto.package) this.bySymbol.set(f.proto.package, f);
      const addMsg = (m: DescMessage) => {
        this.bySymbol.set(m.typeName, f);
        m.fields.forEach((fld) => this.bySymbol.set(`${m.typeName}.${fld.name}`, f));
        m.nestedMessages.forEach(addMsg);
        m.nestedEnums.forEach(addEnum);
      };
      const addEnum = (e: DescEnum) => this.bySymbol.set(e.typeName, f);
      f.messages.forEach(addMsg);
      f.enums.forEach(addEnum);
      for (const s of f.services) {
        this.bySymbol.set(s.typeName, f);
        s.methods.forEach((m) => this.bySymbol.set(`${s.typeName}.${m.name}`, f));
      }
      f.extensions.forEach((x) => this.bySymbol.set(x.typeName, f));
      f.dependencies.forEach(visit);
    };
    files.forEach(visit);
    more.forEach(visit);
  }

  /** The file and its transitive dependencies, the file first. */
  closure(f: DescFile): Uint8Array[] {
    const seen = new Set<DescFile>();
    const walk = (x: DescFile) => {
      if (seen.has(x)) return;
      seen.add(x);
      x.dependencies.forEach(walk);
    };
    walk(f);
    return [...seen].map((x) => this.encoded.get(x)!);
  }

  answer(req: v1.ServerReflectionRequest): v1.ServerReflectionResponse {
    const base = { validHost: req.host, originalRequest: req };
    const r = req.messageRequest;
    const files = (f: DescFile | undefined, what: string): v1.ServerReflectionResponse =>
      f
        ? create(v1.ServerReflectionResponseSchema, {
            ...base,
            messageResponse: { case: "fileDescriptorResponse", value: { fileDescriptorProto: this.closure(f) } },
          })
        : error(NOT_FOUND, `${what} not found`);
    const error = (code: number, message: string) =>
      create(v1.ServerReflectionResponseSchema, {
        ...base,
        messageResponse: { case: "errorResponse", value: { errorCode: code, errorMessage: message } },
      });
    switch (r.case) {
      case "listServices":
        return create(v1.ServerReflectionResponseSchema, {
          ...base,
          messageResponse: { case: "listServicesResponse", value: { service: this.serviceNames.map((name) => ({ name })) } },
        });
      case "fileByFilename":
        return files(this.byName.get(r.value), `file ${r.value}`);
      case "fileContainingSymbol":
        return files(this.bySymbol.get(r.value.replace(/^\./, "")), `symbol ${r.value}`);
      case "fileContainingExtension":
        return error(NOT_FOUND, `extension ${r.value.extensionNumber} of ${r.value.containingType} not found`);
      case "allExtensionNumbersOfType":
        return this.bySymbol.has(r.value)
          ? create(v1.ServerReflectionResponseSchema, {
              ...base,
              messageResponse: { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: [] } },
            })
          : error(NOT_FOUND, `type ${r.value} not found`);
      default:
        return error(UNIMPLEMENTED, "request kind not supported");
    }
  }
}

export function reflectionV1(index: ReflectionIndex): ServiceImpl<V1Methods> {
  return {
    async *serverReflectionInfo(reqs) {
      for await (const req of reqs) yield index.answer(req);
    },
  };
}

/** v1alpha has the same messages and field numbers as v1: translate through the wire format. */
export function reflectionV1alpha(index: ReflectionIndex): ServiceImpl<V1AlphaMethods> {
  return {
    async *serverReflectionInfo(reqs) {
      for await (const req of reqs) {
        const asV1 = fromBinary(v1.ServerReflectionRequestSchema, toBinary(v1alpha.ServerReflectionRequestSchema, req));
        const res = index.answer(asV1);
        yield fromBinary(v1alpha.ServerReflectionResponseSchema, toBinary(v1.ServerReflectionResponseSchema, res));
      }
    },
  };
}
