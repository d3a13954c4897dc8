// The TypeScript client's credentials: a bearer token on every call.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient } from "../src/client/client.js";
import { expectError, useServer } from "./harness.js";

const dir = await mkdtemp(path.join(tmpdir(), "statemgmt-client-"));
const token = randomBytes(32).toString("hex");
const tokensFile = path.join(dir, "tokens.json");
await writeFile(
  tokensFile,
  JSON.stringify({ identities: [{ subject: "orch-1", roles: ["orchestrator"], sha256: createHash("sha256").update(token).digest("hex") }] }),
);
after(() => rm(dir, { recursive: true, force: true }));

describe("client credentials", () => {
  const h = useServer({ auth: { tokensFile, keystone: undefined, reflection: "open" } });

  it("sends the client's bearer token on every call, unless a call sets its own authorization", async () => {
    const anonymous = createClient(StateService, h.server.address);
    const withToken = createClient(StateService, h.server.address, undefined, {}, { token });
    try {
      await expectError(anonymous.getLeader({ election: "e" }), grpc.status.UNAUTHENTICATED);
      const { task } = await withToken.createTask({ action: "deploy_nodes" });
      expect(task!.createdBy).to.equal("orch-1");
      // A call's own authorization wins over the client's.
      const metadata = new grpc.Metadata();
      metadata.set("authorization", "Bearer not-a-valid-token");
      await expectError(withToken.getLeader({ election: "e" }, { metadata }), grpc.status.UNAUTHENTICATED);
      // Streams carry it too.
      const first = await (withToken.watchTask({ taskId: task!.taskId }) as AsyncIterable<unknown>)[Symbol.asyncIterator]().next();
      expect(first.done).to.equal(false);
    } finally {
      anonymous.close();
      withToken.close();
    }
  });
});
