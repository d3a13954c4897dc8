// Authentication, authorization, identity and redaction, through the real
// server and the generated clients: the method × credential matrix (built
// from the descriptor, so a new RPC cannot be left out), token file
// rotation, Keystone validation against a fake Keystone speaking v3, the
// created_by / terminated_by rules, and design reference passwords hidden
// from non-admins in responses and logs.
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { create, createRegistry, fromBinary, type DescMethod } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { ErrorInfoSchema, type ErrorInfo } from "../gen/google/rpc/error_details_pb.js";
import { expect } from "chai";
import { StateService, TaskView } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import * as reflV1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { certificateNames, subjectAltNames } from "../src/auth/certificate.js";
import { KeystoneValidator } from "../src/auth/keystone.js";
import { BootActionStatus } from "../gen/drydock/statemgmt/v1/boot_action_pb.js";
import { authorize, KEY_AUTHORIZED_METHODS, METHOD_ROLES, OPEN_CALLER, ROLES, type Caller, type Role } from "../src/auth/roles.js";
import { parseTokenFile, tokenHash, type ReloadResult } from "../src/auth/tokenFile.js";
import { createClient, type Client } from "../src/client/client.js";
import { ConfigError, defaultDesignConfig, loadConfig, parseKeystoneRoles, type AuthConfig } from "../src/config.js";
import { HttpClient } from "../src/http/client.js";
import { redactReference, redactUrls } from "../src/design/reference.js";
import { createLogger } from "../src/core/log.js";
import { startKeystone } from "./fakes.js";
import { createTestDatabase, decodeError, expectError, useServer, type StateClient } from "./harness.js";
import { logLine, startProcess } from "./process.js";

const md = (headers: Record<string, string>) => {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) m.set(k, v);
  return m;
};
const bearer = (token: string) => md({ authorization: `Bearer ${token}` });
const newToken = () => randomBytes(32).toString("hex");

/** A server log captured line by line. */
function capturedLog() {
  const lines: string[] = [];
  return { lines, log: createLogger("info", { write: (s: string) => void lines.push(s) }), text: () => lines.join("") };
}

/** The outcome of one call as a status name: a stream is OK once its first message (or its OK end) arrives. */
async function outcome(client: StateClient, m: DescMethod, init: unknown, metadata: grpc.Metadata): Promise<{ code: string; err?: unknown }> {
  const fn = (client as unknown as Record<string, (req: unknown, o: unknown) => unknown>)[m.localName]!;
  try {
    if (m.methodKind === "server_streaming") {
      const stream = fn(init, { metadata }) as AsyncIterable<unknown>;
      for await (const _ of stream) break; // leaving the loop cancels the call
    } else {
      await fn(init, { metadata, deadlineMs: 10_000 });
    }
    return { code: "OK" };
  } catch (err) {
    return { code: grpc.status[(err as grpc.ServiceError).code]!, err };
  }
}

// ---------------------------------------------------------------- pure pieces

describe("auth: pieces", () => {
  it("the role table and the key-authorized methods cover every StateService method of the generated descriptor, each once", () => {
    const methods = StateService.methods.map((m) => m.name).sort();
    expect([...Object.keys(METHOD_ROLES), ...KEY_AUTHORIZED_METHODS].sort()).to.deep.equal(methods);
    expect([...KEY_AUTHORIZED_METHODS].sort()).to.deep.equal(["ReportBootActionStatus", "VerifyBootActionKey"]);
  });

  it("refuses a method that is not in the table, for every role", () => {
    for (const role of ROLES) {
      const c: Caller = { subject: "x", roles: [role], authenticated: true };
      expect(() => authorize(c, "DropAllTables")).to.throw(/in no role/);
      expect(() => authorize(c, "toString")).to.throw(/in no role/); // not an inherited property either
    }
    expect(() => authorize(OPEN_CALLER, "DropAllTables")).to.throw(/in no role/);
  });

  it("parses the token file and refuses malformed ones with a reason that quotes no hash", () => {
    const hash = tokenHash("secret");
    const t = parseTokenFile(
      JSON.stringify({
        identities: [
          { subject: "orch-1", roles: ["orchestrator"], sha256: hash.toUpperCase() },
          { subject: "CN=ops", roles: ["operator"] },
        ],
      }),
    );
    expect(t.byHash.get(hash)).to.deep.include({ subject: "orch-1", roles: ["orchestrator"], authenticated: true });
    expect(t.bySubject.get("CN=ops")?.roles).to.deep.equal(["operator"]);
    const bad: [unknown, RegExp][] = [
      ["{", /not valid JSON/],
      [[], /"identities" array/],
      [{ identities: [{ subject: "", roles: [] }] }, /subject/],
      [{ identities: [{ subject: "a", roles: ["root"] }] }, /roles must be/],
      [{ identities: [{ subject: "a", roles: [], sha256: "abc" }] }, /64 hex/],
      [{ identities: [{ subject: "a", roles: [], sha265: hash }] }, /unknown fields sha265/],
      [
        {
          identities: [
            { subject: "a", roles: [], sha256: hash },
            { subject: "b", roles: [], sha256: hash },
          ],
        },
        /listed twice/,
      ],
    ];
    for (const [doc, re] of bad) {
      const text = typeof doc === "string" ? doc : JSON.stringify(doc);
      let msg = "";
      try {
        parseTokenFile(text);
      } catch (err) {
        msg = (err as Error).message;
      }
      expect(msg, text).to.match(re);
      expect(msg).to.not.contain(hash);
    }
  });

  it("names a certificate by its SAN URIs, SAN DNS names, then CN=", () => {
    expect(
      certificateNames({ subject: { CN: "ops-cli" } as never, subjectaltname: "DNS:ops.example, URI:spiffe://site/ops, IP Address:10.0.0.1" }),
    ).to.deep.equal(["URI:spiffe://site/ops", "DNS:ops.example", "CN=ops-cli"]);
    expect(certificateNames({ subject: { CN: "only-cn" } as never, subjectaltname: undefined as never })).to.deep.equal(["CN=only-cn"]);
    expect(certificateNames({ subject: { CN: ["a", "b"] } as never, subjectaltname: "" })).to.deep.equal([]); // ambiguous: none
    expect(subjectAltNames('DNS:"a, b", URI:x:y')).to.deep.equal([
      ["DNS", "a, b"],
      ["URI", "x:y"],
    ]);
  });

  it("redacts a password holding an @ whole, in references and in any text", () => {
    expect(redactReference("https://u:p@ss@host/x")).to.equal("https://u:***@host/x");
    expect(redactReference("deckhand+https://svc:pw@dh:9000/r")).to.equal("deckhand+https://svc:***@dh:9000/r");
    expect(redactReference("https://host/x?a=b@c")).to.equal("https://host/x?a=b@c");
    expect(redactUrls('fetch of "https://u:pw@h/x" and http://a:b@c/ failed')).to.equal('fetch of "https://u:***@h/x" and http://a:***@c/ failed');
    expect(redactReference("https://h/x?rev=1&api_key=k&Token=t;password=p#access_token=a&x=2")).to.equal(
      "https://h/x?rev=1&api_key=***&Token=***;password=***#access_token=***&x=2",
    );
    expect(redactReference("https://u:p@h/x?api%5Fkey=k&X-Amz-Credential=c&empty=&secret=")).to.equal(
      "https://u:***@h/x?api%5Fkey=***&X-Amz-Credential=***&empty=&secret=",
    );
    expect(redactReference("https://h/x?rev=1&site=a#top")).to.equal("https://h/x?rev=1&site=a#top");
    expect(redactUrls("GET http://h/x?client_secret=s&ok=1 failed; see https://u:p@g/?sig=z")).to.equal(
      "GET http://h/x?client_secret=***&ok=1 failed; see https://u:***@g/?sig=***",
    );
  });

  it("checks the settings: Keystone role mapping, reflection, Keystone without credentials", () => {
    expect([...parseKeystoneRoles("Admin=admin, member=orchestrator,reader=reader")]).to.deep.equal([
      ["admin", "admin"],
      ["member", "orchestrator"],
      ["reader", "reader"],
    ]);
    expect(() => parseKeystoneRoles("member=root")).to.throw(ConfigError);
    expect(() => loadConfig([], { STATEMGMT_REFLECTION: "authenticated" })).to.throw(ConfigError, /needs authentication/);
    expect(() => loadConfig([], { STATEMGMT_AUTH_KEYSTONE: "1" })).to.throw(ConfigError, /STATEMGMT_KEYSTONE_URL/);
    expect(() => loadConfig(["--reflection", "closed"], {})).to.throw(ConfigError);
    const c = loadConfig(["--auth-tokens", "t.json"], {});
    expect(c.auth.tokensFile).to.equal(path.resolve("t.json"));
    expect(loadConfig([], {}).auth).to.deep.equal({ tokensFile: undefined, keystone: undefined, reflection: "open" });
  });
});

// ---------------------------------------------------------------- token file server

describe("auth: bearer tokens through the server", function () {
  this.timeout(60_000);
  const tokens: Record<Role, string> = { reader: newToken(), operator: newToken(), orchestrator: newToken(), admin: newToken() };
  const subjects: Record<Role, string> = { reader: "dash-1", operator: "ops-1", orchestrator: "orch-1", admin: "root-1" };
  let dir: string;
  let root: string;
  const auth: AuthConfig = { tokensFile: undefined, keystone: undefined, reflection: "open" };
  const design = defaultDesignConfig();
  const captured = capturedLog();
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "auth-tokens-"));
    root = await mkdtemp(path.join(tmpdir(), "auth-design-"));
    await writeFile(path.join(root, "site.yaml"), "site: auth\n");
    design.roots = [root];
    auth.tokensFile = path.join(dir, "tokens.json");
    const identities = ROLES.map((r) => ({ subject: subjects[r], roles: [r], sha256: tokenHash(tokens[r]) }));
    await writeFile(auth.tokensFile, JSON.stringify({ identities }));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(root, { recursive: true, force: true });
  });
  const h = useServer({ auth, design, log: captured.log });
  const as = (r: Role) => ({ metadata: bearer(tokens[r]) });

  describe("the method × credential matrix", () => {
    /** A valid request per method, so that an allowed call succeeds (built in before, from tasks created as admin). */
    const valid: Record<string, unknown> = {};
    before(async () => {
      const c = h.client;
      const admin = as("admin");
      const task = async (init: Record<string, unknown> = {}) => (await c.createTask({ action: "deploy_nodes", ...init }, admin)).task!;
      const parent = await task();
      await task({ parentTaskId: parent.taskId });
      const watched = await task();
      const updated = await task();
      const terminated = await task();
      await c.appendResultMessages({ taskId: watched.taskId, messages: [{ message: "m1" }] }, admin);
      await c.createBuildData(
        { buildData: { nodeName: "n1", taskId: watched.taskId, generator: "g", dataFormat: "text/plain", dataElement: Buffer.from("x") } },
        admin,
      );
      // Claimed by the orchestrator: a lease belongs to its claimant (and admins), so both may renew it.
      const leader = await c.claimLeadership({ election: "orchestrator", instanceId: "orch-1", ttl: { seconds: 3600n } }, as("orchestrator"));
      const nodeKey = Buffer.from((await c.setBootActionContext({ nodeName: "node-1", taskId: watched.taskId }, admin)).generatedIdentityKey);
      const [bootAction] = (
        await c.createBootActions({ nodeName: "node-1", taskId: watched.taskId, actions: [{ actionName: "first", signalling: true }] }, admin)
      ).bootActions;
      let created = 0;
      // A new name on every call, so that each allowed create succeeds.
      Object.defineProperty(valid, "createBootActions", {
        get: () => ({ nodeName: "node-1", taskId: watched.taskId, actions: [{ actionName: `action-${++created}`, signalling: true }] }),
      });
      Object.assign(valid, {
        createTask: { action: "deploy_nodes" },
        getTask: { taskId: watched.taskId, view: TaskView.FULL },
        listTasks: { pageSize: 10 },
        updateTask: { task: { taskId: updated.taskId, retry: 1 }, updateMask: { paths: ["retry"] } },
        terminateTask: { taskId: terminated.taskId },
        listSubtasks: { parentTaskId: parent.taskId },
        claimNextTask: { instanceId: "orch-1", actions: ["prepare_nodes"] },
        purgeTasks: { olderThanDays: 30 },
        appendResultMessages: { taskId: watched.taskId, messages: [{ message: "more" }] },
        listResultMessages: { taskId: watched.taskId },
        watchTask: { taskId: watched.taskId },
        watchTasks: { sendInitial: true },
        createBuildData: { buildData: { nodeName: "n1", taskId: watched.taskId, generator: "g", dataFormat: "text/plain", dataElement: Buffer.from("y") } },
        listBuildData: { nodeName: "n1" },
        claimLeadership: { election: "matrix", instanceId: "orch-1", ttl: { seconds: 60n } },
        renewLeadership: { election: "orchestrator", instanceId: "orch-1", term: leader.leader!.term },
        resignLeadership: { election: "matrix-resign", instanceId: "orch-2", term: 1n },
        getLeader: { election: "orchestrator" },
        watchLeader: { election: "orchestrator" },
        getDesignDocuments: { designRef: `file://${root}/site.yaml` },
        setBootActionContext: { nodeName: "node-2", taskId: watched.taskId },
        getBootActionContext: { nodeName: "node-1" },
        getBootAction: { actionId: bootAction!.actionId },
        listBootActions: { nodeName: "node-1" },
        // Details only: the action stays INCOMPLETE, so every call succeeds.
        reportBootActionStatus: { actionId: bootAction!.actionId, identityKey: nodeKey, details: [{ message: "progress" }] },
        verifyBootActionKey: { nodeName: "node-1", identityKey: nodeKey },
        exportState: { includeSecrets: true },
        // The same task each time: added once, then skipped (both answer OK).
        importRecords: {
          formatVersion: 1,
          records: [
            {
              line: 2n,
              json: JSON.stringify({
                kind: "task",
                task_id: "0b7c8a52-3f7e-4d55-9d1e-0a4f3f1c2b6d",
                parent_task_id: null,
                action: "deploy_nodes",
                design_ref: "",
                status: "requested",
                result: { status: "incomplete", message: "", reason: "", error_count: 0, successes: [], failures: [], links: [] },
                node_filter: null,
                request_context: null,
                created: "2024-01-02T03:04:05.000006Z",
                created_by: "",
                updated: "2024-01-02T03:04:05.000006Z",
                terminated: null,
                terminated_by: null,
                terminate: false,
                retry: 0,
                version: 1,
                claimed_by: null,
                claimed_at: null,
                claimed_term: 0,
              }),
            },
          ],
        },
      });
    });

    const credentials: [string, () => grpc.Metadata, (m: DescMethod) => string][] = [
      // Nodes hold no token: the key-authorized methods answer whatever credentials come along.
      ["no credentials", () => new grpc.Metadata(), (m) => (KEY_AUTHORIZED_METHODS.has(m.name) ? "OK" : "UNAUTHENTICATED")],
      ["a bad token", () => bearer("not-a-token-the-server-knows"), (m) => (KEY_AUTHORIZED_METHODS.has(m.name) ? "OK" : "UNAUTHENTICATED")],
      ...ROLES.map((r): [string, () => grpc.Metadata, (m: DescMethod) => string] => [
        r,
        () => bearer(tokens[r]),
        (m) => (KEY_AUTHORIZED_METHODS.has(m.name) || ROLES.indexOf(r) >= ROLES.indexOf(METHOD_ROLES[m.name]!) ? "OK" : "PERMISSION_DENIED"),
      ]),
    ];
    for (const m of StateService.methods) {
      for (const [who, metadata, expected] of credentials) {
        it(`${m.name} with ${who}: ${METHOD_ROLES[m.name] || KEY_AUTHORIZED_METHODS.has(m.name) ? expected(m) : "(not in the role table)"}`, async () => {
          expect(valid, `no valid request for ${m.name}: add one to this test`).to.have.property(m.localName);
          const { code, err } = await outcome(h.client, m, valid[m.localName], metadata());
          expect(code, err ? decodeError(err).message : "").to.equal(expected(m));
          if (code === "PERMISSION_DENIED") {
            const d = decodeError(err);
            expect(d.errorInfo?.reason).to.equal("ROLE_REQUIRED");
            expect(d.errorInfo?.metadata).to.deep.equal({ method: m.name, required_role: METHOD_ROLES[m.name] });
          }
          if (code === "UNAUTHENTICATED") {
            expect(decodeError(err).errorInfo?.reason).to.equal(who === "a bad token" ? "TOKEN_INVALID" : "UNAUTHENTICATED");
          }
        });
      }
    }
  });

  it("lets a node without a token report only with its identity key", async () => {
    const admin = as("admin");
    const taskId = (await h.client.createTask({ action: "deploy_nodes" }, admin)).task!.taskId;
    const key = Buffer.from((await h.client.setBootActionContext({ nodeName: "node-auth", taskId }, admin)).generatedIdentityKey);
    const [a] = (await h.client.createBootActions({ nodeName: "node-auth", taskId, actions: [{ actionName: "x", signalling: true }] }, admin)).bootActions;
    const wrong = await expectError(
      h.client.reportBootActionStatus({ actionId: a!.actionId, identityKey: Buffer.alloc(32), status: BootActionStatus.SUCCESS }),
      grpc.status.PERMISSION_DENIED,
    );
    expect(wrong.errorInfo?.reason).to.equal("IDENTITY_KEY_MISMATCH");
    const none = await expectError(h.client.reportBootActionStatus({ actionId: a!.actionId, status: BootActionStatus.SUCCESS }), grpc.status.UNAUTHENTICATED);
    expect(none.errorInfo?.reason).to.equal("IDENTITY_KEY_REQUIRED");
    const ok = await h.client.reportBootActionStatus({ actionId: a!.actionId, identityKey: key, status: BootActionStatus.SUCCESS });
    expect(ok.bootAction!.status).to.equal(BootActionStatus.SUCCESS);
    // The other boot action methods still need a token.
    await expectError(h.client.getBootAction({ actionId: a!.actionId }), grpc.status.UNAUTHENTICATED);
  });

  it("accepts the token as x-auth-token too, and refuses malformed credentials without quoting them", async () => {
    await h.client.listTasks({}, { metadata: md({ "x-auth-token": tokens.reader }) });
    const secret = `s3cr3t-${newToken()}`;
    for (const m of [
      md({ authorization: `Basic ${secret}` }),
      md({ authorization: `Bearer ${secret}` }),
      md({ authorization: `Bearer ${tokens.reader}`, "x-auth-token": secret }),
    ]) {
      const d = await expectError(h.client.listTasks({}, { metadata: m }), grpc.status.UNAUTHENTICATED);
      expect(d.errorInfo?.reason).to.equal("TOKEN_INVALID");
      expect(d.message).to.not.contain(secret);
    }
    expect(captured.text()).to.not.contain(secret);
    for (const t of Object.values(tokens)) expect(captured.text()).to.not.contain(t);
  });

  it("refuses a call with two authorization (or x-auth-token) lines on the wire, whichever comes first", async () => {
    // Node's http2 keeps only the first authorization line of a request: an
    // admin token first and a wrong one second would pass as admin.
    const wrong = `wrong-${newToken()}`;
    const one = await rawListTasks(h.server.address, [["authorization", `Bearer ${tokens.admin}`]]);
    expect(one).to.deep.include({ status: "0" });
    for (const lines of [
      [
        ["authorization", `Bearer ${tokens.admin}`],
        ["authorization", `Bearer ${wrong}`],
      ],
      [
        ["authorization", `Bearer ${wrong}`],
        ["authorization", `Bearer ${tokens.admin}`],
      ],
      [
        ["authorization", `Bearer ${tokens.admin}`],
        ["authorization", `Bearer ${tokens.admin}`],
      ],
      [
        ["x-auth-token", tokens.admin],
        ["x-auth-token", wrong],
      ],
      [
        ["x-auth-token", tokens.admin],
        ["authorization", `Bearer ${wrong}`],
      ],
    ] as [string, string][][]) {
      const r = await rawListTasks(h.server.address, lines);
      expect(r.status, JSON.stringify(lines.map(([n]) => n))).to.equal(String(grpc.status.UNAUTHENTICATED));
      expect(r.reason).to.equal("TOKEN_INVALID");
      expect(r.message).to.contain("send one credential");
      expect(r.message).to.not.contain(wrong).and.not.contain(tokens.admin);
    }
  });

  it("logs the caller's subject on every call and the task id of mutating calls", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" }, as("operator"));
    await h.client.getTask({ taskId: task!.taskId }, as("reader"));
    const calls = captured.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "call");
    const create = calls.find((l) => l.method === "drydock.statemgmt.v1.StateService/CreateTask" && l.taskId === task!.taskId);
    expect(create).to.include({ subject: "ops-1", code: "OK" });
    expect(calls.find((l) => l.method === "drydock.statemgmt.v1.StateService/GetTask" && l.subject === "dash-1")).to.exist;
  });

  describe("created_by and terminated_by", () => {
    it("fill in the caller's subject, accept it named, refuse someone else's unless admin", async () => {
      const c = h.client;
      const { task: a } = await c.createTask({ action: "deploy_nodes" }, as("operator"));
      expect(a!.createdBy).to.equal("ops-1");
      const { task: b } = await c.createTask({ action: "deploy_nodes", createdBy: "ops-1" }, as("operator"));
      expect(b!.createdBy).to.equal("ops-1");
      const d = await expectError(c.createTask({ action: "deploy_nodes", createdBy: "alice" }, as("orchestrator")), grpc.status.PERMISSION_DENIED);
      expect(d.errorInfo?.reason).to.equal("IDENTITY_MISMATCH");
      expect(d.errorInfo?.metadata).to.deep.include({ field: "created_by", subject: "orch-1" });
      const { task: byAdmin } = await c.createTask({ action: "deploy_nodes", createdBy: "alice" }, as("admin"));
      expect(byAdmin!.createdBy).to.equal("alice");

      await expectError(c.terminateTask({ taskId: a!.taskId, terminatedBy: "bob" }, as("operator")), grpc.status.PERMISSION_DENIED);
      const { task: t } = await c.terminateTask({ taskId: a!.taskId }, as("operator"));
      expect(t!.terminatedBy).to.equal("ops-1");
      const { task: t2 } = await c.terminateTask({ taskId: b!.taskId, terminatedBy: "bob" }, as("admin"));
      expect(t2!.terminatedBy).to.equal("bob");
    });
  });

  describe("design reference passwords", () => {
    const ref = "https://deploy:Pa55@word@designs.example/site.yaml";
    const redacted = "https://deploy:***@designs.example/site.yaml";

    it("are user:*** for non-admins in every task response, and whole for an admin", async () => {
      const c = h.client;
      const { task } = await c.createTask({ action: "deploy_nodes", designRef: ref, initialStatus: TaskStatus.QUEUED }, as("operator"));
      expect(task!.designRef).to.equal(redacted);
      const id = task!.taskId;
      expect((await c.getTask({ taskId: id }, as("reader"))).task!.designRef).to.equal(redacted);
      expect((await c.getTask({ taskId: id }, as("admin"))).task!.designRef).to.equal(ref);
      const listed = (await c.listTasks({ statuses: [TaskStatus.QUEUED], pageSize: 1000 }, as("reader"))).tasks.find((t) => t.taskId === id);
      expect(listed!.designRef).to.equal(redacted);
      const adminListed = (await c.listTasks({ statuses: [TaskStatus.QUEUED], pageSize: 1000 }, as("admin"))).tasks.find((t) => t.taskId === id);
      expect(adminListed!.designRef).to.equal(ref);
      const claimed = (await c.claimNextTask({ instanceId: "orch-9", actions: ["deploy_nodes"] }, as("orchestrator"))).task;
      expect(claimed?.taskId).to.equal(id);
      expect(claimed!.designRef).to.equal(redacted);
      const updated = (await c.updateTask({ task: { taskId: id, retry: 2 }, updateMask: { paths: ["retry"] } }, as("orchestrator"))).task;
      expect(updated!.designRef).to.equal(redacted);
      expect((await c.terminateTask({ taskId: id }, as("admin"))).task!.designRef).to.equal(ref);
    });

    it("are redacted for a reader and not for an admin watching the same task at once (the feed shares its task objects)", async () => {
      const c = h.client;
      const parent = (await c.createTask({ action: "deploy_nodes" }, as("admin"))).task!;
      const { task } = await c.createTask({ action: "deploy_nodes", designRef: ref, parentTaskId: parent.taskId }, as("admin"));
      const id = task!.taskId;
      /** The design_ref of the first two snapshots of the task; `first` resolves with the first (the stream is subscribed). */
      const collect = <E>(stream: AsyncIterable<E>, pick: (ev: E) => string | undefined) => {
        let firstSeen!: () => void;
        const first = new Promise<void>((r) => (firstSeen = r));
        const all = (async () => {
          const seen: string[] = [];
          for await (const ev of stream) {
            const v = pick(ev);
            if (v === undefined) continue;
            seen.push(v);
            if (seen.length === 1) firstSeen();
            if (seen.length === 2) break;
          }
          return seen;
        })();
        return { first, all };
      };
      const watch = (role: Role) => collect(c.watchTask({ taskId: id }, as(role)), (ev) => (ev.event.case === "task" ? ev.event.value.designRef : undefined));
      const watchAll = (role: Role) =>
        collect(c.watchTasks({ parentTaskId: parent.taskId, sendInitial: true }, as(role)), (ev) => (ev.task?.taskId === id ? ev.task.designRef : undefined));
      const streams = { reader: watch("reader"), admin: watch("admin"), readerAll: watchAll("reader"), adminAll: watchAll("admin") };
      await Promise.all(Object.values(streams).map((s) => Promise.race([s.first, s.all])));
      await c.updateTask({ task: { taskId: id, status: TaskStatus.QUEUED }, updateMask: { paths: ["status"] } }, as("orchestrator"));
      expect(await streams.reader.all).to.deep.equal([redacted, redacted]);
      expect(await streams.admin.all).to.deep.equal([ref, ref]);
      expect(await streams.readerAll.all).to.deep.equal([redacted, redacted]);
      expect(await streams.adminAll.all).to.deep.equal([ref, ref]);
    });

    it("in a query string (?api_key=, ?token=, ...) are *** for non-admins too, in responses and errors", async () => {
      const c = h.client;
      const secret = `Qs3cret${newToken().slice(0, 8)}`;
      const withQuery = `https://designs.example/site.yaml?rev=3&api_key=${secret}&X-Amz-Signature=${secret}#access_token=${secret}`;
      const masked = "https://designs.example/site.yaml?rev=3&api_key=***&X-Amz-Signature=***#access_token=***";
      const { task } = await c.createTask({ action: "deploy_nodes", designRef: withQuery }, as("operator"));
      expect(task!.designRef).to.equal(masked);
      expect((await c.getTask({ taskId: task!.taskId }, as("reader"))).task!.designRef).to.equal(masked);
      expect((await c.getTask({ taskId: task!.taskId }, as("admin"))).task!.designRef).to.equal(withQuery); // stored whole: the fetch needs it
      const listed = (await c.listTasks({ pageSize: 1000 }, as("reader"))).tasks.find((t) => t.taskId === task!.taskId);
      expect(listed!.designRef).to.equal(masked);
      const d = await expectError(
        c.createTask({ action: "deploy_nodes", designRef: `gopher://h/x?password=${secret}` }, as("operator")),
        grpc.status.INVALID_ARGUMENT,
      );
      expect(d.message).to.contain("password=***");
      expect(JSON.stringify(d)).to.not.contain(secret);
      expect(captured.text()).to.not.contain(secret);
    });

    it("never appear in the log", () => {
      expect(captured.text()).to.contain("drydock.statemgmt.v1.StateService/CreateTask");
      expect(captured.text()).to.not.contain("Pa55");
    });
  });

  it("leaves health open without credentials, and reflection open by default", async () => {
    const health = createClient(Health, h.server.address);
    const refl = createClient(reflV1.ServerReflection, h.server.address);
    try {
      expect((await health.check({})).status).to.equal(1); // SERVING
      expect(await listServices(refl, new grpc.Metadata())).to.include("drydock.statemgmt.v1.StateService");
    } finally {
      health.close();
      refl.close();
    }
  });
});

/** HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), no Huffman: changes no table. */
function hpackLiteral(name: string, value: string): Buffer {
  const int7 = (n: number) => {
    if (n < 127) return [n];
    const out = [127];
    for (n -= 127; n >= 128; n >>= 7) out.push((n & 127) | 128);
    out.push(n);
    return out;
  };
  return Buffer.concat([Buffer.from([0, ...int7(name.length)]), Buffer.from(name), Buffer.from(int7(value.length)), Buffer.from(value)]);
}

/**
 * A connection that appends header lines to the first HEADERS frame the
 * client sends: Node's http2 client refuses to send `authorization` twice,
 * so the lines a raw HPACK encoder could send are added on the wire.
 */
function appendingConnection(address: string, lines: [string, string][]): Duplex {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  const sock = net.connect(port, host);
  let pending = Buffer.alloc(0);
  let preface = false;
  let done = false;
  const d = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      if (done) return void sock.write(chunk, cb);
      pending = Buffer.concat([pending, chunk]);
      const out: Buffer[] = [];
      if (!preface) {
        if (pending.length < 24) return cb();
        out.push(pending.subarray(0, 24));
        pending = pending.subarray(24);
        preface = true;
      }
      while (!done && pending.length >= 9) {
        const len = pending.readUIntBE(0, 3);
        if (pending.length < 9 + len) break;
        let frame = pending.subarray(0, 9 + len);
        pending = pending.subarray(9 + len);
        if (frame[3] === 1) {
          // HEADERS: END_HEADERS set, neither PADDED nor PRIORITY (what Node's client sends)
          expect(frame[4]! & 0x2c).to.equal(0x04);
          const block = Buffer.concat([frame.subarray(9), ...lines.map(([n, v]) => hpackLiteral(n, v))]);
          const head = Buffer.from(frame.subarray(0, 9));
          head.writeUIntBE(block.length, 0, 3);
          frame = Buffer.concat([head, block]);
          done = true;
        }
        out.push(frame);
      }
      if (done) {
        out.push(pending);
        pending = Buffer.alloc(0);
      }
      sock.write(Buffer.concat(out), cb);
    },
    read() {},
    final(cb) {
      sock.end(cb);
    },
    destroy(err, cb) {
      sock.destroy();
      cb(err);
    },
  });
  sock.on("data", (c: Buffer) => d.push(c));
  sock.on("end", () => d.push(null));
  sock.on("error", (e) => d.destroy(e));
  return d;
}

const errorInfoRegistry = createRegistry(ErrorInfoSchema);

/** ListTasks over raw HTTP/2 with `lines` as its only credential header lines: grpc-status, message, ErrorInfo reason. */
async function rawListTasks(address: string, lines: [string, string][]): Promise<{ status?: string; message?: string; reason?: string }> {
  const session = http2.connect(`http://${address}`, { createConnection: () => appendingConnection(address, lines) });
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": "POST",
      ":path": "/drydock.statemgmt.v1.StateService/ListTasks",
      "content-type": "application/grpc",
      te: "trailers",
    });
    const got: Record<string, unknown> = {};
    req.on("response", (hdrs) => Object.assign(got, hdrs));
    req.on("trailers", (hdrs) => Object.assign(got, hdrs));
    req.resume();
    req.end(Buffer.alloc(5)); // one empty, uncompressed message
    await once(req, "close");
    const bin = got["grpc-status-details-bin"];
    const info =
      typeof bin === "string"
        ? fromBinary(StatusSchema, Buffer.from(bin, "base64"))
            .details.map((a) => anyUnpack(a, errorInfoRegistry))
            .find(Boolean)
        : undefined;
    return {
      status: got["grpc-status"] as string | undefined,
      message: typeof got["grpc-message"] === "string" ? decodeURIComponent(got["grpc-message"]) : undefined,
      reason: (info as ErrorInfo | undefined)?.reason,
    };
  } finally {
    session.close();
  }
}

/** ListServices over the reflection stream: the names, or the status code's name when refused. */
async function listServices(client: Client<(typeof reflV1.ServerReflection)["method"]>, metadata: grpc.Metadata): Promise<string[] | string> {
  const call = client.serverReflectionInfo({ metadata });
  return new Promise((resolve) => {
    call.on("data", (r: reflV1.ServerReflectionResponse) => {
      call.end();
      resolve(r.messageResponse.case === "listServicesResponse" ? r.messageResponse.value.service.map((s) => s.name) : [r.messageResponse.case ?? ""]);
    });
    call.on("error", (err: grpc.ServiceError) => resolve(grpc.status[err.code]!));
    call.write(create(reflV1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } }));
  });
}

describe("auth: reflection with STATEMGMT_REFLECTION=authenticated", () => {
  const token = newToken();
  let dir: string;
  const auth: AuthConfig = { tokensFile: undefined, keystone: undefined, reflection: "authenticated" };
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "auth-refl-"));
    auth.tokensFile = path.join(dir, "tokens.json");
    await writeFile(auth.tokensFile, JSON.stringify({ identities: [{ subject: "nobody-special", roles: [], sha256: tokenHash(token) }] }));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const h = useServer({ auth });

  it("refuses reflection without credentials, serves it to any authenticated caller; health stays open", async () => {
    const refl = createClient(reflV1.ServerReflection, h.server.address);
    const health = createClient(Health, h.server.address);
    try {
      expect(await listServices(refl, new grpc.Metadata())).to.equal("UNAUTHENTICATED");
      expect(await listServices(refl, bearer(token))).to.include("grpc.health.v1.Health");
      expect((await health.check({})).status).to.equal(1);
      // A caller without roles is authenticated, but may call no StateService method.
      await expectError(h.client.listTasks({}, { metadata: bearer(token) }), grpc.status.PERMISSION_DENIED);
    } finally {
      refl.close();
      health.close();
    }
  });
});

// ---------------------------------------------------------------- rotation

describe("auth: token file rotation", function () {
  this.timeout(30_000);
  const first = newToken();
  const second = newToken();
  let dir: string;
  const auth: AuthConfig = { tokensFile: undefined, keystone: undefined, reflection: "open" };
  const captured = capturedLog();
  const fileOf = (token: string) => JSON.stringify({ identities: [{ subject: "rotating", roles: ["reader"], sha256: tokenHash(token) }] });
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "auth-rotate-"));
    auth.tokensFile = path.join(dir, "tokens.json");
    await writeFile(auth.tokensFile, fileOf(first));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const h = useServer({ auth, log: captured.log });

  /** Replaces the file the way rotation tools do (write aside, rename over) and waits for the server to re-read it. */
  async function replace(text: string): Promise<ReloadResult> {
    const reloaded = once(h.server.auth.tokens!, "reload") as Promise<[ReloadResult]>;
    await writeFile(`${auth.tokensFile}.tmp`, text);
    await rename(`${auth.tokensFile}.tmp`, auth.tokensFile!);
    return (await reloaded)[0];
  }

  it("takes a new token file without a restart", async () => {
    await h.client.listTasks({}, { metadata: bearer(first) });
    expect(await replace(fileOf(second))).to.deep.include({ ok: true, changed: true });
    await h.client.listTasks({}, { metadata: bearer(second) });
    await expectError(h.client.listTasks({}, { metadata: bearer(first) }), grpc.status.UNAUTHENTICATED);
  });

  it("keeps the previous tokens when the new file is broken, and logs why", async () => {
    const r = await replace('{"identities": [{"subject": "x", "roles": ["superuser"]}]}');
    expect(r.ok).to.equal(false);
    await h.client.listTasks({}, { metadata: bearer(second) });
    const warn = captured.lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "auth token file not reloaded; keeping the previous one");
    expect(warn?.error).to.match(/roles must be/);
    expect((await replace("not json at all")).ok).to.equal(false);
    await h.client.listTasks({}, { metadata: bearer(second) });
    // Fixed again: taken.
    expect((await replace(fileOf(first))).ok).to.equal(true);
    await h.client.listTasks({}, { metadata: bearer(first) });
  });

  it("re-reads on reload() (what SIGHUP calls) and reports an unchanged file as such", async () => {
    expect(await h.server.auth.reload()).to.deep.equal({ ok: true, changed: false });
  });
});

describe("auth: SIGHUP in the server process", function () {
  this.timeout(90_000);
  it("re-reads the token file and keeps serving", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "auth-hup-"));
    const db = await createTestDatabase();
    const file = path.join(dir, "tokens.json");
    const token = newToken();
    await writeFile(file, JSON.stringify({ identities: [{ subject: "hup", roles: ["reader"], sha256: tokenHash(token) }] }));
    const p = startProcess(["--listen", "127.0.0.1:0", "--database-url", db.url, "--auth-tokens", file]);
    try {
      const ready = await logLine(p, "ready");
      p.child.kill("SIGHUP");
      await logLine(p, "auth token file re-read (SIGHUP)");
      const client = createClient(StateService, String(ready.address));
      try {
        await client.listTasks({}, { metadata: bearer(token) });
        await expectError(client.listTasks({}), grpc.status.UNAUTHENTICATED);
      } finally {
        client.close();
      }
      expect(p.child.exitCode).to.equal(null);
    } finally {
      p.child.kill("SIGTERM");
      await p.exited;
      await db.drop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("warns at start-up when the server runs without authentication", async () => {
    const db = await createTestDatabase();
    const p = startProcess(["--listen", "127.0.0.1:0", "--database-url", db.url]);
    try {
      const warn = await logLine(p, "serving without authentication: every caller may call every method (set --auth-tokens or STATEMGMT_AUTH_KEYSTONE=1)");
      expect(warn.level).to.equal(40);
      await logLine(p, "ready");
    } finally {
      p.child.kill("SIGTERM");
      await p.exited;
      await db.drop();
    }
  });
});

// ---------------------------------------------------------------- Keystone

describe("auth: Keystone tokens", function () {
  this.timeout(30_000);
  let keystone: Awaited<ReturnType<typeof startKeystone>>;
  const service = { url: "", username: "statemgmt", password: "svc-pass", projectName: "service", userDomain: "Default", projectDomain: "Default" };
  const auth: AuthConfig = {
    tokensFile: undefined,
    keystone: { keystone: service, roles: parseKeystoneRoles("admin=admin,member=orchestrator,reader=reader") },
    reflection: "open",
  };
  const captured = capturedLog();
  const hour = () => Date.now() + 3600_000;
  before(async () => {
    keystone = await startKeystone({ username: service.username, password: service.password });
    service.url = `${keystone.base}/v3`;
  });
  after(() => keystone?.close());
  const h = useServer({ auth, log: captured.log });
  const ks = (token: string) => ({ metadata: md({ "x-auth-token": token }) });

  it("accepts a valid token, with its Keystone roles mapped to ours and the user as subject", async () => {
    keystone.issue("ks-member", { user: "drydock", roles: ["member"], expiresAt: hour() });
    keystone.issue("ks-reader", { user: "viewer", domain: "ldap", roles: ["reader"], expiresAt: hour() });
    const { task } = await h.client.createTask({ action: "deploy_nodes" }, ks("ks-member"));
    expect(task!.createdBy).to.equal("drydock");
    await h.client.claimLeadership({ election: "ks", instanceId: "i", ttl: { seconds: 10n } }, { metadata: bearer("ks-member") });
    const d = await expectError(h.client.purgeTasks({ olderThanDays: 1 }, ks("ks-member")), grpc.status.PERMISSION_DENIED);
    expect(d.errorInfo?.metadata.required_role).to.equal("admin");
    const { task: t2 } = await h.client.terminateTask({ taskId: task!.taskId }, ks("ks-member"));
    expect(t2!.terminatedBy).to.equal("drydock");
    await h.client.getTask({ taskId: task!.taskId }, ks("ks-reader"));
    await expectError(h.client.terminateTask({ taskId: task!.taskId }, ks("ks-reader")), grpc.status.PERMISSION_DENIED);
    const calls = captured.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(calls.find((l) => l.method === "drydock.statemgmt.v1.StateService/GetTask")?.subject).to.equal("viewer@ldap");
  });

  it("refuses an expired and a revoked token with UNAUTHENTICATED", async () => {
    keystone.issue("ks-expired", { user: "old", roles: ["admin"], expiresAt: Date.now() - 1000 });
    const d = await expectError(h.client.listTasks({}, ks("ks-expired")), grpc.status.UNAUTHENTICATED);
    expect(d.errorInfo?.reason).to.equal("TOKEN_INVALID");
    expect(d.message).to.not.contain("ks-expired");
    await expectError(h.client.listTasks({}, ks("ks-never-issued")), grpc.status.UNAUTHENTICATED);
    keystone.issue("ks-revoked", { user: "gone", roles: ["admin"], expiresAt: hour() });
    keystone.revoke("ks-revoked");
    await expectError(h.client.listTasks({}, ks("ks-revoked")), grpc.status.UNAUTHENTICATED);
    expect(keystone.validations("ks-revoked")).to.equal(1);
  });

  it("validates a token once within its cache time, however many calls (also concurrent) carry it", async () => {
    keystone.issue("ks-cached", { user: "busy", roles: ["reader"], expiresAt: hour() });
    await Promise.all(Array.from({ length: 20 }, () => h.client.listTasks({}, ks("ks-cached"))));
    for (let i = 0; i < 5; i++) await h.client.listTasks({}, ks("ks-cached"));
    expect(keystone.validations("ks-cached")).to.equal(1);
  });

  it("caches an answer until the token expires, at most 5 minutes (a clock the test moves)", async () => {
    let now = Date.now();
    const http = new HttpClient({ allowedHosts: [], connectTimeoutMs: 1000, idleTimeoutMs: 1000, maxRedirects: 0, retries: 0, backoffMs: 10 });
    const v = new KeystoneValidator(http, auth.keystone!, createLogger("silent"), () => now);
    const signal = new AbortController().signal;
    try {
      keystone.issue("ks-long", { user: "long", roles: ["reader"], expiresAt: now + 3600_000 });
      keystone.issue("ks-short", { user: "short", roles: ["reader"], expiresAt: now + 60_000 });
      expect((await v.validate("ks-long", signal))?.subject).to.equal("long");
      expect((await v.validate("ks-short", signal))?.subject).to.equal("short");
      now += 59_000;
      await v.validate("ks-long", signal);
      expect((await v.validate("ks-short", signal))?.subject).to.equal("short");
      expect([keystone.validations("ks-long"), keystone.validations("ks-short")]).to.deep.equal([1, 1]);
      now += 2_000; // past ks-short's expiry: asked again, and refused (expires_at is past on this clock)
      expect(await v.validate("ks-short", signal)).to.equal(undefined);
      expect(keystone.validations("ks-short")).to.equal(2);
      now += 4 * 60_000; // 5 min 1 s after the first validation
      await v.validate("ks-long", signal);
      expect(keystone.validations("ks-long")).to.equal(2);
    } finally {
      await http.close();
    }
  });

  it("gets a new service token once when Keystone refuses its own (401)", async () => {
    keystone.issue("ks-after-rotation", { user: "rot", roles: ["reader"], expiresAt: hour() });
    keystone.revokeServiceTokens();
    await h.client.listTasks({}, ks("ks-after-rotation"));
    expect(keystone.validations("ks-after-rotation")).to.equal(2);
  });

  it("answers UNAVAILABLE when Keystone fails or is down, never letting the call through", async () => {
    keystone.issue("ks-during-outage", { user: "x", roles: ["admin"], expiresAt: hour() });
    keystone.fail(503);
    let d = await expectError(h.client.listTasks({}, ks("ks-during-outage")), grpc.status.UNAVAILABLE);
    expect(d.errorInfo?.reason).to.equal("KEYSTONE_UNAVAILABLE");
    keystone.fail(undefined);
    await keystone.close();
    keystone.issue("ks-down", { user: "x", roles: ["admin"], expiresAt: hour() });
    d = await expectError(h.client.listTasks({}, ks("ks-down")), grpc.status.UNAVAILABLE);
    expect(d.errorInfo?.reason).to.equal("KEYSTONE_UNAVAILABLE");
    expect(d.message).to.not.contain("ks-down");
    expect(captured.text()).to.not.contain("ks-down");
    // A token validated before the outage is still served from the cache.
    await h.client.listTasks({}, ks("ks-cached"));
  });
});
