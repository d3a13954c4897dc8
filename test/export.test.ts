// statemgmt export / import / import-drydock: the real CLI process against
// real servers on real databases. A backup restored into a fresh database
// exports the same file; importing twice stores once; a truncated or corrupt
// file is refused naming the line, with nothing written; a Drydock database
// (its schema from test/fixtures/drydock-schema.sql) comes over field by field.
import { spawn } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import postgres from "postgres";
import { BootActionStatus } from "../gen/drydock/statemgmt/v1/boot_action_pb.js";
import { ActionResult, TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { BuildDataView, TaskView } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { eventually, expectError, shared, useServer, withDatabase, type Harness } from "./kit/index.js";
import { ROOT } from "./process.js";

const BIN = path.join(ROOT, "bin/statemgmt");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** bin/statemgmt with these arguments against `h`'s server; resolves when it exits. */
function run(h: Harness, args: string[]): Promise<Run> {
  const { STATEMGMT_SERVER: _s, STATEMGMT_TOKEN: _t, DRYDOCK_DATABASE_URL: _d, ...env } = process.env;
  const started = Date.now();
  const child = spawn(BIN, ["--server", h.server.address, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr, ms: Date.now() - started })));
}

/** The same on a pseudo-terminal (util-linux's `script`): what it drew, stdout and stderr together. */
function runOnTerminal(h: Harness, args: string[]): Promise<Run> {
  const { STATEMGMT_SERVER: _s, STATEMGMT_TOKEN: _t, NO_COLOR: _n, ...env } = process.env;
  const quoted = [BIN, "--server", h.server.address, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  const started = Date.now();
  const child = spawn("script", ["-qfec", `stty cols 120 rows 30; exec ${quoted}`, "/dev/null"], {
    env: { ...env, TERM: "xterm-256color" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr: "", ms: Date.now() - started })));
}

const dir = mkdtempSync(path.join(tmpdir(), "statemgmt-export-"));
const file = (name: string) => path.join(dir, name);

/** The file without the header's exported_at. */
const withoutTimestamp = (text: string) => text.replace(/"exported_at":"[^"]*"/, '"exported_at":""');

async function tableCounts(h: Harness): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of ["tasks", "result_messages", "build_data", "boot_action_contexts", "boot_actions"]) {
    out[t] = Number((await h.pg.query(`select count(*) as n from ${t}`)).rows[0].n);
  }
  return out;
}

const EMPTY = { tasks: 0, result_messages: 0, build_data: 0, boot_action_contexts: 0, boot_actions: 0 };

describe("export and import", function () {
  this.timeout(120_000);
  const a = useServer();
  const b = useServer();
  const c = useServer();
  let nodeKey: Buffer;
  let data: Buffer;

  before(async () => {
    // A representative state on a: a tree of tasks, messages (unicode,
    // extra, errors), a terminated task, build data, a node's boot actions.
    const top = (
      await a.client.createTask({
        action: "deploy_nodes",
        designRef: "deckhand+https://dh:9000/api/v1.0/revisions/7/rendered-documents",
        nodeFilter: { filterSet: [{ nodeNames: ["n1", "n2"], nodeLabels: { rack: "r1" } }] },
      })
    ).task!;
    const sub1 = (await a.client.createTask({ action: "prepare_nodes", parentTaskId: top.taskId })).task!;
    const sub2 = (await a.client.createTask({ action: "deploy_node", parentTaskId: top.taskId })).task!;
    const subsub = (await a.client.createTask({ action: "apply_node_networking", parentTaskId: sub2.taskId })).task!;
    await a.client.appendResultMessages({
      taskId: top.taskId,
      messages: [
        { message: "début — ノード n1 ✓", contextType: "node", context: "n1", extra: { detail: { nested: [1, "二", null] } } },
        { message: "failed", error: true },
      ],
    });
    await a.client.appendResultMessages({ taskId: subsub.taskId, messages: Array.from({ length: 250 }, (_, i) => ({ message: `step ${i}` })) });
    await a.client.updateTask({
      task: {
        taskId: sub1.taskId,
        status: TaskStatus.COMPLETE,
        result: {
          status: ActionResult.PARTIAL_SUCCESS,
          message: "m",
          reason: "r",
          successes: ["n1"],
          failures: ["n2"],
          links: [{ rel: "log", href: "https://logs/1" }],
        },
      },
      updateMask: { paths: ["status", "result"] },
    });
    const other = (await a.client.createTask({ action: "validate_design" })).task!;
    await a.client.terminateTask({ taskId: other.taskId, terminatedBy: "" });
    data = randomBytes(200_000);
    await a.client.createBuildData({
      buildData: { nodeName: "n1", taskId: sub2.taskId, generator: "lshw", dataFormat: "application/octet-stream", dataElement: data },
    });
    await a.client.createBuildData({
      buildData: { nodeName: "n2", taskId: sub2.taskId, generator: "dmesg", dataFormat: "text/plain", dataElement: Buffer.from("boot ok\n") },
    });
    nodeKey = Buffer.from((await a.client.setBootActionContext({ nodeName: "n1", taskId: top.taskId })).generatedIdentityKey);
    const [ba] = (
      await a.client.createBootActions({
        nodeName: "n1",
        taskId: top.taskId,
        actions: [
          { actionName: "hello", signalling: true },
          { actionName: "quiet", signalling: false },
        ],
      })
    ).bootActions;
    await a.client.reportBootActionStatus({
      actionId: ba!.actionId,
      identityKey: nodeKey,
      status: BootActionStatus.SUCCESS,
      details: [{ message: "done", extra: { rc: 0 } }],
    });
  });

  it("exports a snapshot that a fresh database restores exactly: exporting it again gives the same file", async () => {
    const exported = await run(a, ["export", "-f", file("a.ndjson")]);
    expect(exported.code, exported.stderr).to.equal(0);
    expect(exported.stderr).to.equal(
      "exported 263 records (5 task, 253 result_message, 2 build_data, 1 boot_action_context, 2 boot_action), " +
        `${statSync(file("a.ndjson")).size} bytes to ${file("a.ndjson")}\n`,
    );
    expect(statSync(file("a.ndjson")).mode & 0o777).to.equal(0o644);
    const text = readFileSync(file("a.ndjson"), "utf8");
    const lines = text.trimEnd().split("\n");
    expect(lines).to.have.length(265);
    const header = JSON.parse(lines[0]!);
    expect(header).to.include({ format: "drydock-statemgmt-export", version: 1, includes_secrets: false });
    expect(JSON.parse(lines.at(-1)!)).to.deep.equal({
      kind: "end",
      counts: { task: 5, result_message: 253, build_data: 2, boot_action_context: 1, boot_action: 2 },
    });
    expect(text).not.to.contain("identity_key");

    const imported = await run(b, ["import", file("a.ndjson")]);
    expect(imported.code, imported.stderr).to.equal(0);
    expect(imported.stdout).to.equal(
      [
        "KIND                    ADDED  SKIPPED  REFUSED",
        "task                        5        0        0",
        "result_message            253        0        0",
        "build_data                  2        0        0",
        "boot_action_context         1        0        0",
        "boot_action                 2        0        0",
        "",
      ].join("\n"),
    );
    const again = await run(b, ["export", "-f", file("b.ndjson")]);
    expect(again.code, again.stderr).to.equal(0);
    expect(withoutTimestamp(readFileSync(file("b.ndjson"), "utf8"))).to.equal(withoutTimestamp(text));

    // Through the API: ids, times, versions, links, sequences, data.
    const [ta, tb] = await Promise.all([a, b].map((h) => h.client.listTasks({ pageSize: 100 })));
    expect(tb!.tasks).to.deep.equal(ta!.tasks);
    const top = ta!.tasks.find((t) => t.action === "deploy_nodes")!;
    expect(top.subtaskIds).to.have.length(2);
    const sub2 = ta!.tasks.find((t) => t.action === "deploy_node")!;
    const subsub = ta!.tasks.find((t) => t.action === "apply_node_networking")!;
    expect((await b.client.listSubtasks({ parentTaskId: sub2.taskId })).tasks.map((t) => t.taskId)).to.deep.equal([subsub.taskId]);
    const msgs = await b.client.listResultMessages({ taskId: subsub.taskId, pageSize: 1000 });
    expect(msgs.messages.map((m) => [m.sequence, m.message])).to.deep.equal(Array.from({ length: 250 }, (_, i) => [BigInt(i + 1), `step ${i}`]));
    const bd = await b.client.listBuildData({ nodeName: "n1", view: BuildDataView.FULL });
    expect(Buffer.from(bd.buildData[0]!.dataElement).equals(data)).to.equal(true);
    expect(bd.buildData[0]!.buildDataId).to.equal((await a.client.listBuildData({ nodeName: "n1" })).buildData[0]!.buildDataId);
    // New build data gets an id after the restored ones.
    const newer = await b.client.createBuildData({
      buildData: { nodeName: "n3", taskId: sub2.taskId, generator: "x", dataFormat: "text/plain", dataElement: Buffer.from("x") },
    });
    expect(newer.buildData!.buildDataId).to.equal(3n);
    expect((await b.client.listBootActions({ nodeName: "n1" })).bootActions).to.deep.equal((await a.client.listBootActions({ nodeName: "n1" })).bootActions);
    // Without secrets, the node's old key does not work on the restored server.
    await expectError(b.client.verifyBootActionKey({ nodeName: "n1", identityKey: nodeKey }), grpc.status.PERMISSION_DENIED);
  });

  it("imports a file twice and stores it once: the second time every record is skipped", async () => {
    const before = await tableCounts(b);
    const second = await run(b, ["import", file("a.ndjson"), "-o", "json"]);
    expect(second.code, second.stderr).to.equal(0);
    const out = JSON.parse(second.stdout);
    expect(out).to.deep.equal({
      counts: {
        task: { added: 0, skipped: 5, refused: 0 },
        result_message: { added: 0, skipped: 253, refused: 0 },
        build_data: { added: 0, skipped: 2, refused: 0 },
        boot_action_context: { added: 0, skipped: 1, refused: 0 },
        boot_action: { added: 0, skipped: 2, refused: 0 },
      },
      refusals: [],
    });
    expect(await tableCounts(b)).to.deep.equal(before);
  });

  it("refuses a record that contradicts what is stored, naming its line, and imports the rest", async () => {
    // b's subsub task moves on after the restore (a message appended, continuing the sequence): its stored version differs.
    const subsub = (await b.client.listTasks({ pageSize: 100 })).tasks.find((t) => t.action === "apply_node_networking")!;
    expect((await b.client.appendResultMessages({ taskId: subsub.taskId, messages: [{ message: "after restore" }] })).sequences).to.deep.equal([251n]);
    const text = readFileSync(file("a.ndjson"), "utf8").split("\n");
    const line = text.findIndex((l) => l.includes('"action":"apply_node_networking"')) + 1;
    const r = await run(b, ["import", file("a.ndjson")]);
    expect(r.code).to.equal(5);
    expect(r.stdout).to.contain("task                        0        4        1");
    expect(r.stderr).to.match(
      new RegExp(
        `^refused: line ${line}: task [0-9a-f-]{36}: the task is already stored with a different updated, version; nothing was written for this record\\n$`,
      ),
    );
  });

  it("refuses a truncated file naming its last line, and writes nothing", async () => {
    const text = readFileSync(file("a.ndjson"), "utf8");
    const cut = text.slice(0, Math.floor(text.length * 0.6));
    const lastLine = cut.split("\n").length;
    writeFileSync(file("cut.ndjson"), cut);
    const r = await run(c, ["import", file("cut.ndjson")]);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.match(new RegExp(`^error: ${file("cut.ndjson")}: line ${lastLine} (is not JSON|.*)`));
    // Cut at a line end: no trailer.
    const whole = `${text.split("\n").slice(0, 100).join("\n")}\n`;
    writeFileSync(file("cut2.ndjson"), whole);
    const r2 = await run(c, ["import", file("cut2.ndjson")]);
    expect(r2.code).to.equal(2);
    expect(r2.stderr).to.equal(`error: ${file("cut2.ndjson")} ends at line 100 without its trailer: the file is truncated; nothing was imported\n`);
    expect(await tableCounts(c)).to.deep.equal(EMPTY);
  });

  it("refuses a corrupt line (bad JSON, a wrong value, a record out of order, wrong counts), naming it, and writes nothing", async () => {
    const lines = readFileSync(file("a.ndjson"), "utf8").trimEnd().split("\n");
    const cases: [string, (l: string[]) => void, RegExp][] = [
      ["bad JSON", (l) => (l[150] = l[150]!.slice(0, 40)), /line 151 is not JSON/],
      [
        "bad status",
        (l) => (l[2] = l[2]!.replace(/"status":"(requested|queued|running|complete|terminating|terminated)"/, '"status":"finished"')),
        /line 3 status must be one of requested, queued, running, terminating, terminated, complete/,
      ],
      ["bad sequence", (l) => (l[200] = l[200]!.replace(/"sequence":\d+/, '"sequence":-4')), /line 201 sequence is -4; it must be between 1 and/],
      [
        "unknown field",
        (l) => (l[7] = l[7]!.replace('{"kind":"result_message",', '{"kind":"result_message","colour":"red",')),
        /line 8 colour is not a field of this record \(format version 1\)/,
      ],
      ["out of order", (l) => l.splice(6, 0, l.splice(1, 1)[0]!), /line 7 is a task record after result_message records/],
      ["counts", (l) => l.splice(100, 1), /line 264 \(the trailer\) counts 253 result_message records, but the file holds 252/],
      ["newer version", (l) => (l[0] = l[0]!.replace('"version":1', '"version":2')), /line 1 is version 2 of the format; this statemgmt reads version 1/],
    ];
    for (const [what, corrupt, expected] of cases) {
      const l = [...lines];
      corrupt(l);
      writeFileSync(file("bad.ndjson"), `${l.join("\n")}\n`);
      const r = await run(c, ["import", file("bad.ndjson")]);
      expect(r.code, what).to.equal(2);
      expect(r.stderr, what).to.match(expected);
      expect(r.stderr, what).to.match(/nothing was imported\n$/);
    }
    expect(await tableCounts(c)).to.deep.equal(EMPTY);
  });

  it("with --include-secrets writes a 0600 file with the key hashes, and the restored server accepts the node's key", async () => {
    const r = await run(a, ["export", "--include-secrets", "-f", file("secrets.ndjson")]);
    expect(r.code, r.stderr).to.equal(0);
    expect(statSync(file("secrets.ndjson")).mode & 0o777).to.equal(0o600);
    const text = readFileSync(file("secrets.ndjson"), "utf8");
    const hash = createHash("sha256").update(nodeKey).digest("base64");
    expect(text.split(`"identity_key_sha256":"${hash}"`)).to.have.length(4); // the context and both actions
    const imported = await run(c, ["import", file("secrets.ndjson")]);
    expect(imported.code, imported.stderr).to.equal(0);
    expect((await c.client.verifyBootActionKey({ nodeName: "n1", identityKey: nodeKey })).context!.nodeName).to.equal("n1");
    const actions = (await c.client.listBootActions({ nodeName: "n1" })).bootActions;
    const quiet = actions.find((x) => x.actionName === "quiet")!;
    expect(quiet.status).to.equal(BootActionStatus.UNREPORTED);
  });

  it("shows progress on stderr only when it is a terminal, and clears it before the summary", async function () {
    if (!existsSync("/usr/bin/script")) this.skip();
    const e = await runOnTerminal(a, ["export", "-f", file("tty.ndjson")]);
    expect(e.code, e.stdout).to.equal(0);
    expect(e.stdout).to.contain("\r\x1b[2Kexporting: 263 records, 0.3 MiB\r\x1b[2Kexported 263 records (");
    const i = await runOnTerminal(c, ["import", file("tty.ndjson")]);
    expect(i.code, i.stdout).to.equal(0);
    expect(i.stdout).to.contain(`\r\x1b[2Kchecking ${file("tty.ndjson")}: line 1`);
    expect(i.stdout).to.contain("\r\x1b[2Kimporting: 263 of 263 records\r\x1b[2KKIND");
    // Piped (the tests above), stderr holds only the summary line.
  });

  it("is a snapshot: a context set while the stream is held back (in its build data) is not in it", async () => {
    // 24 MiB of build data: more than the client buffers (16 messages of 1 MiB) and the
    // HTTP/2 windows, so the server waits for the reader in the middle of the build data.
    const taskId = (await a.client.listTasks({ pageSize: 100 })).tasks.find((t) => t.action === "deploy_node")!.taskId;
    for (let i = 0; i < 8; i++) {
      await a.client.createBuildData({
        buildData: { nodeName: "n9", taskId, generator: `big${i}`, dataFormat: "application/octet-stream", dataElement: randomBytes(3 * 1024 * 1024) },
      });
    }
    const call = a.client.exportState({});
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      call.once("data", (r: { chunk: Uint8Array }) => {
        chunks.push(Buffer.from(r.chunk));
        call.pause();
        resolve();
      });
      call.once("error", reject);
    });
    // The export's transaction is open, reading build data.
    const reading = async () =>
      (
        await a.pg.query(
          "select state from pg_stat_activity where datname = current_database() and query like '%from build_data order by build_data_id%' and xact_start is not null and pid <> pg_backend_pid()",
        )
      ).rows.map((r) => r.state);
    await eventually(async () => (await reading()).length > 0, 5000, "the export reading build data");
    expect(await reading()).to.have.length(1);
    await a.client.setBootActionContext({ nodeName: "n-new", taskId });
    call.resume();
    for await (const r of call) chunks.push(Buffer.from((r as { chunk: Uint8Array }).chunk));
    const lines = Buffer.concat(chunks).toString("utf8").trimEnd().split("\n");
    const kinds = lines.slice(1, -1).map((l) => JSON.parse(l).kind as string);
    expect(kinds.filter((k) => k === "boot_action_context")).to.have.length(1);
    expect(lines.join("\n")).not.to.contain("n-new");
    expect(JSON.parse(lines.at(-1)!).counts).to.deep.equal({ task: 5, result_message: 253, build_data: 10, boot_action_context: 1, boot_action: 2 });
    // Exported afterwards, it is there.
    const after = await run(a, ["export"]);
    expect(after.stdout).to.contain('"node_name":"n-new"');
  });

  it("exports through stdout too, the same file", async () => {
    const r = await run(a, ["export"]);
    expect(r.code, r.stderr.slice(0, 500)).to.equal(0);
    const f = await run(a, ["export", "-f", file("a2.ndjson")]);
    expect(f.code, f.stderr).to.equal(0);
    expect(withoutTimestamp(r.stdout)).to.equal(withoutTimestamp(readFileSync(file("a2.ndjson"), "utf8")));
  });
});

describe("export of a 12 MiB build data record", function () {
  this.timeout(120_000);
  const h = useServer();

  it("sends every chunk in order, the trailer last (the last record's chunks were once overtaken by it)", async () => {
    const t = (await h.client.createTask({ action: "deploy_nodes" })).task!;
    const data = randomBytes(12 * 1024 * 1024);
    await h.pg.query(
      "insert into build_data (node_name, task_id, generator, data_format, data_element) values ('n1', $1, 'g', 'application/octet-stream', $2)",
      [t.taskId, data],
    );
    const r = await run(h, ["export", "-f", file("big.ndjson")]);
    expect(r.code, r.stderr).to.equal(0);
    const lines = readFileSync(file("big.ndjson"), "utf8").trimEnd().split("\n");
    expect(lines).to.have.length(4);
    expect(Buffer.from(JSON.parse(lines[2]!).data_element, "base64").equals(data)).to.equal(true);
    expect(JSON.parse(lines[3]!)).to.deep.equal({ kind: "end", counts: { task: 1, result_message: 0, build_data: 1, boot_action_context: 0, boot_action: 0 } });
    // One ImportRecords call carries it (16 MiB as base64): skipped, it is already there.
    const i = await run(h, ["import", file("big.ndjson"), "-o", "json"]);
    expect(i.code, i.stderr).to.equal(0);
    expect(JSON.parse(i.stdout).counts.build_data).to.deep.equal({ added: 0, skipped: 1, refused: 0 });
  });
});

// ---------------------------------------------------------------- Drydock

const bytesOf = (uuid: string) => Buffer.from(uuid.replaceAll("-", ""), "hex");
/** A 16-byte ULID for `ms` (random part from `seed`). */
const ulidBytes = (ms: number, seed: number) => {
  const b = Buffer.alloc(16);
  b.writeUIntBE(ms, 0, 6);
  b.writeUInt32BE(seed, 12);
  return b;
};
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ulidOf = (b: Buffer) => {
  let n = BigInt(`0x${b.toString("hex")}`);
  let s = "";
  for (let i = 0; i < 26; i++) {
    s = CROCKFORD[Number(n & 31n)] + s;
    n >>= 5n;
  }
  return s;
};

describe("import-drydock", function () {
  this.timeout(300_000);
  const h = useServer();
  const fresh = useServer();
  let drydockUrl = "";
  let dd: postgres.Sql;
  const dbName = `drydock_${randomBytes(4).toString("hex")}`;
  const T = {
    root: randomUUID(),
    prep: randomUUID(),
    deploy: randomUUID(),
    leaf: randomUUID(),
    redeploy: randomUUID(),
    orphan: randomUUID(),
    lonely: randomUUID(),
  };
  const missing = randomUUID();
  const key1 = randomBytes(32);
  const key2 = randomBytes(32);
  const A = {
    first: ulidBytes(1_700_000_000_000, 1),
    second: ulidBytes(1_700_000_000_500, 2),
    third: ulidBytes(1_700_000_100_000, 3),
    fourth: ulidBytes(1_700_000_100_001, 4),
  };
  const bigText = "ä".repeat(512 * 1024); // 1 MiB of UTF-8
  const MESSAGES = 10_000;

  /** Rows as Drydock's SQLAlchemy writes them: timestamps parsed by PostgreSQL from their text (microseconds kept), bytea as \\x hex. */
  const insertRows = async (table: string, rows: Record<string, unknown>[]) => {
    const hex = (v: unknown): unknown => (Buffer.isBuffer(v) ? `\\x${v.toString("hex")}` : Array.isArray(v) ? v.map(hex) : v);
    const json = rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, hex(v)])));
    await dd.unsafe(`insert into ${table} select * from json_populate_recordset(null::${table}, $1::text::json)`, [JSON.stringify(json)]);
  };

  before(async () => {
    const admin = postgres(shared.adminUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${dbName}`);
    await admin.end();
    drydockUrl = withDatabase(shared.adminUrl, dbName);
    dd = postgres(drydockUrl, { max: 2, onnotice: () => {} });
    await dd.unsafe(readFileSync(path.join(ROOT, "test/fixtures/drydock-schema.sql"), "utf8"));
    // Tasks as Drydock's Task.to_db writes them: request_context is json.dumps() text in a json column, links {rel: [uri]}.
    const task = (id: string, o: Record<string, unknown>) => ({
      task_id: bytesOf(id),
      parent_task_id: null,
      subtask_id_list: [],
      result_status: "incomplete",
      result_message: null,
      result_reason: null,
      result_error_count: 0,
      result_successes: [],
      result_failures: [],
      result_links: {},
      retry: 0,
      status: "requested",
      created: "2023-11-14 22:13:20.123456",
      created_by: "shipyard",
      updated: "2023-11-14 22:13:21.5",
      design_ref: "deckhand+http://deckhand/api/v1.0/revisions/3/rendered-documents",
      request_context: JSON.stringify({ user: "shipyard", roles: ["admin"], request_id: "req-1" }),
      node_filter: null,
      action: "deploy_nodes",
      terminated: null,
      terminated_by: null,
      terminate: false,
      ...o,
    });
    const rows = [
      task(T.root, {
        subtask_id_list: [T.prep, T.deploy, missing].map(bytesOf),
        status: "complete",
        result_status: "partial_success",
        result_message: "Ünïcödé réšult ✓",
        result_reason: "one node failed",
        result_error_count: 3,
        result_successes: ["n1"],
        result_failures: ["n2"],
        result_links: { maas: ["http://maas/1", "http://maas/2"], log: ["http://log"] },
        node_filter: { filter_set_type: "union", filter_set: [{ filter_type: "intersection", node_names: ["n1", "n2"], node_labels: { rack: "r1" } }] },
      }),
      task(T.prep, {
        parent_task_id: bytesOf(T.root),
        action: "prepare_nodes",
        status: "complete",
        result_status: "success",
        created: "2023-11-14 22:13:22",
        updated: "2023-11-14 22:14:00",
      }),
      task(T.deploy, {
        parent_task_id: bytesOf(T.root),
        subtask_id_list: [bytesOf(T.leaf)],
        action: "deploy_node",
        status: "running",
        created: "2023-11-14 22:13:23",
      }),
      task(T.leaf, {
        parent_task_id: bytesOf(T.deploy),
        action: "apply_node_networking",
        status: "terminated",
        terminate: true,
        terminated: "2023-11-14 23:00:00",
        terminated_by: "admin",
        created: "2023-11-14 22:13:24",
      }),
      task(T.redeploy, {
        action: "deploy_nodes",
        status: "queued",
        created: "2023-11-15 08:00:00",
        updated: null,
        design_ref: null,
        created_by: null,
        request_context: null,
        result_links: null,
        result_status: null,
      }),
      task(T.orphan, { parent_task_id: bytesOf(missing), action: "prepare_nodes", created: "2023-11-14 22:13:25" }),
      task(T.lonely, { action: "validate_design", status: "complete", result_status: "failure", created: "2023-11-13 10:00:00" }),
    ];
    await insertRows("tasks", rows);
    // 10,000 messages over four tasks in interleaved global order, plus one of a deleted task.
    const order = [T.root, T.deploy, T.leaf, T.redeploy];
    await dd`
      insert into result_message (task_id, message, error, context, context_type, ts, extra)
      select decode(replace((${dd.array(order)}::text[])[1 + (i % 4)], '-', ''), 'hex'),
             'message ' || i || ' — ノード ✓', i % 97 = 0, 'n' || (i % 3), 'node',
             timestamp '2023-11-14 22:13:30' + i * interval '1 millisecond',
             case when i % 5 = 0 then to_json('{"i": ' || i || '}') end
      from generate_series(1, ${MESSAGES}) as i`;
    await dd`insert into result_message (task_id, message, error, context, context_type, ts, extra) values
      (${bytesOf(missing)}, 'of a deleted task', false, 'x', 'task', '2023-11-14 22:20:00', null),
      (${bytesOf(T.root)}, 'null context and ts', null, null, null, null, null)`;
    // Boot action details of the first deployment (Drydock writes them with context_type bootaction).
    await dd`insert into result_message (task_id, message, error, context, context_type, ts, extra) values
      (${bytesOf(T.deploy)}, 'unit started', false, ${ulidOf(A.first)}, 'bootaction', '2023-11-14 23:10:00', ${JSON.stringify({ unit: "x.service" })}::json),
      (${bytesOf(T.deploy)}, 'unit done', false, ${ulidOf(A.first)}, 'bootaction', '2023-11-14 23:11:00.25', null)`;
    await insertRows("build_data", [
      {
        node_name: "n1",
        task_id: bytesOf(T.deploy),
        collected_date: "2023-11-14 22:30:00.000001",
        generator: "lshw",
        data_format: "application/xml",
        data_element: bigText,
      },
      {
        node_name: "n1",
        task_id: bytesOf(T.redeploy),
        collected_date: "2023-11-15 09:00:00",
        generator: "dmesg",
        data_format: "text/plain",
        data_element: "línea 1\nline 2\n",
      },
    ]);
    // Node n1 deployed twice: its context names the second deployment; the first deployment's actions remain.
    await dd`insert into boot_action ${dd([{ node_name: "n1", task_id: bytesOf(T.redeploy), identity_key: key2 }])}`;
    await dd`insert into boot_action_status ${dd([
      { node_name: "n1", action_id: A.first, action_name: "hello", task_id: bytesOf(T.deploy), identity_key: key1, action_status: "success" },
      { node_name: "n1", action_id: A.second, action_name: "quiet", task_id: bytesOf(T.deploy), identity_key: key1, action_status: "unreported" },
      { node_name: "n1", action_id: A.third, action_name: "hello", task_id: bytesOf(T.redeploy), identity_key: key2, action_status: "incomplete" },
      { node_name: "n1", action_id: A.fourth, action_name: "quiet", task_id: bytesOf(T.redeploy), identity_key: key2, action_status: "unreported" },
    ])}`;
  });

  after(async () => {
    await dd?.end();
    const admin = postgres(shared.adminUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop database if exists ${dbName} with (force)`);
    await admin.end();
  });

  it("--dry-run prints the counts and the problems, and writes nothing", async () => {
    const r = await run(h, ["import-drydock", "--database-url", drydockUrl, "--dry-run"]);
    expect(r.code, r.stderr).to.equal(0);
    const lines = r.stdout.split("\n");
    expect(lines.slice(0, 6)).to.deep.equal([
      "KIND                  RECORDS",
      "task                        6",
      "result_message          10003",
      "build_data                  2",
      "boot_action_context         1",
      "boot_action                 4",
    ]);
    expect(lines[6]).to.equal("4 rows would be skipped; the first 4:");
    expect(r.stdout).to.contain(`  task ${T.root}: its subtask_id_list names task ${missing}, which does not exist; the link is dropped`);
    expect(r.stdout).to.contain(`  task ${T.orphan}: its parent task ${missing} does not exist; skipped with its subtasks and messages`);
    expect(r.stdout).to.contain(`its task ${missing} does not exist (deleted); skipped`);
    expect(r.stdout).to.contain("its ts is null; the task's created time 2023-11-14T22:13:20.123456Z is used");
    expect(r.stderr).to.equal("dry run: nothing was written\n");
    expect((await h.client.listTasks({})).tasks).to.have.length(0);
  });

  it("refuses a database that is not Drydock's, and one it cannot reach, writing nothing", async () => {
    const r = await run(h, ["import-drydock", "--database-url", h.dbUrl, "--dry-run"]);
    expect([r.code, r.stderr]).to.deep.equal([
      2,
      "error: not a Drydock statemgmt database: result_message, boot_action, boot_action_status are missing (in schema public)\n",
    ]);
    const u = new URL(drydockUrl);
    u.pathname = "/no_such_database";
    const gone = await run(h, ["import-drydock", "--database-url", u.toString()]);
    expect(gone.code).to.equal(6);
    expect(gone.stderr).to.match(/^error: cannot read Drydock's database: database "no_such_database" does not exist\n$/);
    expect((await h.client.listTasks({})).tasks).to.have.length(0);
  });

  it("brings everything over, field by field, and a second run skips it all", async () => {
    const r = await run(h, ["import-drydock", "--database-url", drydockUrl, "--include-secrets"]);
    expect(r.code, r.stderr).to.equal(0);
    console.log(`      import-drydock: ${6 + 10_003 + 2 + 1 + 4} records in ${r.ms} ms`);
    expect(r.stdout).to.equal(
      [
        "KIND                    ADDED  SKIPPED  REFUSED",
        "task                        6        0        0",
        "result_message          10003        0        0",
        "build_data                  2        0        0",
        "boot_action_context         1        0        0",
        "boot_action                 4        0        0",
        "",
      ].join("\n"),
    );
    expect(r.stderr).to.contain("4 rows of Drydock's database were skipped as inconsistent");

    const { task: root, resultMessages } = await h.client.getTask({ taskId: T.root, view: TaskView.FULL });
    expect(root!.parentTaskId).to.equal("");
    expect([...root!.subtaskIds].sort()).to.deep.equal([T.prep, T.deploy].sort());
    expect(root!.status).to.equal(TaskStatus.COMPLETE);
    expect(root!.result!.status).to.equal(ActionResult.PARTIAL_SUCCESS);
    expect(root!.result!.message).to.equal("Ünïcödé réšult ✓");
    expect(root!.result!.reason).to.equal("one node failed");
    expect(root!.result!.errorCount).to.equal(3);
    expect(root!.result!.successes).to.deep.equal(["n1"]);
    expect(root!.result!.failures).to.deep.equal(["n2"]);
    expect(root!.result!.links.map((l) => [l.rel, l.href])).to.deep.equal([
      ["maas", "http://maas/1"],
      ["maas", "http://maas/2"],
      ["log", "http://log"],
    ]);
    expect(root!.nodeFilter!.filterSet[0]!.nodeNames).to.deep.equal(["n1", "n2"]);
    expect(root!.nodeFilter!.filterSet[0]!.nodeLabels).to.deep.equal({ rack: "r1" });
    expect(root!.requestContext).to.deep.equal({ user: "shipyard", roles: ["admin"], request_id: "req-1" });
    expect(new Date(Number(root!.created!.seconds) * 1000).toISOString()).to.equal("2023-11-14T22:13:20.000Z");
    expect(root!.created!.nanos).to.equal(123_456_000);
    expect(root!.updated!.nanos).to.equal(500_000_000);
    expect(root!.createdBy).to.equal("shipyard");
    expect(root!.designRef).to.equal("deckhand+http://deckhand/api/v1.0/revisions/3/rendered-documents");
    // 10,000 / 4 interleaved messages plus the one with nulls, in Drydock's order, sequences 1..n.
    expect(resultMessages).to.have.length(2501);
    expect(resultMessages.map((m) => m.sequence)).to.deep.equal(Array.from({ length: 2501 }, (_, i) => BigInt(i + 1)));
    expect(resultMessages[0]!.message).to.equal("message 4 — ノード ✓");
    expect(resultMessages[1]!.message).to.equal("message 8 — ノード ✓");
    expect(resultMessages[1]!.context).to.equal("n2");
    expect(resultMessages[0]!.extra).to.equal(undefined);
    expect(resultMessages.find((m) => m.message === "message 20 — ノード ✓")!.extra).to.deep.equal({ i: 20 });
    expect(resultMessages.find((m) => m.message === "message 388 — ノード ✓")!.error).to.equal(true);
    const last = resultMessages[2500]!;
    expect([last.message, last.error, last.context, last.contextType, last.extra]).to.deep.equal(["null context and ts", false, "", "", undefined]);
    expect(last.ts).to.deep.equal(root!.created);

    const deploy = (await h.client.getTask({ taskId: T.deploy })).task!;
    expect(deploy.parentTaskId).to.equal(T.root);
    expect(deploy.subtaskIds).to.deep.equal([T.leaf]);
    const leaf = (await h.client.getTask({ taskId: T.leaf })).task!;
    expect([leaf.status, leaf.terminate, leaf.terminatedBy]).to.deep.equal([TaskStatus.TERMINATED, true, "admin"]);
    const redeploy = (await h.client.getTask({ taskId: T.redeploy })).task!;
    expect([redeploy.designRef, redeploy.createdBy, redeploy.requestContext, redeploy.result!.links, redeploy.result!.status]).to.deep.equal([
      "",
      "",
      undefined,
      [],
      ActionResult.INCOMPLETE,
    ]);
    expect(redeploy.updated).to.deep.equal(redeploy.created);
    await expectError(h.client.getTask({ taskId: T.orphan }), grpc.status.NOT_FOUND);
    const deployMsgs = (await h.client.listResultMessages({ taskId: T.deploy, pageSize: 1000, afterSequence: 2500n })).messages;
    expect(deployMsgs.map((m) => [m.sequence, m.message, m.contextType])).to.deep.equal([
      [2501n, "unit started", "bootaction"],
      [2502n, "unit done", "bootaction"],
    ]);
    // New messages continue each task's sequence.
    expect((await h.client.appendResultMessages({ taskId: T.redeploy, messages: [{ message: "after migration" }] })).sequences).to.deep.equal([2501n]);

    const lshw = (await h.client.listBuildData({ nodeName: "n1", view: BuildDataView.FULL, pageSize: 10 })).buildData;
    expect(lshw.map((b) => b.generator)).to.deep.equal(["dmesg", "lshw"]);
    expect(Buffer.from(lshw[1]!.dataElement).equals(Buffer.from(bigText, "utf8"))).to.equal(true);
    expect(lshw[1]!.dataElement.length).to.equal(1024 * 1024);
    expect(Buffer.from(lshw[0]!.dataElement).toString("utf8")).to.equal("línea 1\nline 2\n");
    expect([lshw[1]!.dataFormat, lshw[1]!.taskId, lshw[1]!.collectedAt!.nanos]).to.deep.equal(["application/xml", T.deploy, 1000]);

    const actions = (await h.client.listBootActions({ nodeName: "n1" })).bootActions;
    expect(actions.map((x) => [x.actionId, x.actionName, x.taskId, x.status, x.signalling])).to.deep.equal([
      [ulidOf(A.first), "hello", T.deploy, BootActionStatus.SUCCESS, true],
      [ulidOf(A.second), "quiet", T.deploy, BootActionStatus.UNREPORTED, false],
      [ulidOf(A.third), "hello", T.redeploy, BootActionStatus.INCOMPLETE, true],
      [ulidOf(A.fourth), "quiet", T.redeploy, BootActionStatus.UNREPORTED, false],
    ]);
    expect(new Date(Number(actions[0]!.created!.seconds) * 1000 + actions[0]!.created!.nanos / 1e6).toISOString()).to.equal(
      new Date(1_700_000_000_000).toISOString(),
    );
    expect(new Date(Number(actions[0]!.reported!.seconds) * 1000 + actions[0]!.reported!.nanos / 1e6).toISOString()).to.equal("2023-11-14T23:11:00.250Z");
    const ctx = (await h.client.getBootActionContext({ nodeName: "n1" })).context!;
    expect(ctx.taskId).to.equal(T.redeploy);
    // The node's current key (Drydock's second deployment) works; the first deployment's does not.
    await h.client.verifyBootActionKey({ nodeName: "n1", identityKey: key2 });
    await expectError(h.client.verifyBootActionKey({ nodeName: "n1", identityKey: key1 }), grpc.status.PERMISSION_DENIED);
    const reported = await h.client.reportBootActionStatus({
      actionId: ulidOf(A.third),
      identityKey: key2,
      status: BootActionStatus.SUCCESS,
      details: [{ message: "ok" }],
    });
    expect(reported.bootAction!.status).to.equal(BootActionStatus.SUCCESS);

    // A second run: everything already there (the task and the action that changed since are refused as different).
    const again = await run(h, ["import-drydock", "--database-url", drydockUrl, "--include-secrets", "-o", "json"]);
    const out = JSON.parse(again.stdout);
    expect(out.counts).to.deep.equal({
      task: { added: 0, skipped: 5, refused: 1 },
      result_message: { added: 0, skipped: 10003, refused: 0 },
      build_data: { added: 0, skipped: 2, refused: 0 },
      boot_action_context: { added: 0, skipped: 1, refused: 0 },
      boot_action: { added: 0, skipped: 3, refused: 1 },
    });
    expect(again.code).to.equal(5);

    // Exported and imported into a fresh database, it exports the same again; with the rates.
    const exported = await run(h, ["export", "--include-secrets", "-f", file("drydock.ndjson")]);
    expect(exported.code, exported.stderr).to.equal(0);
    console.log(`      export: ${exported.stderr.trim()} in ${exported.ms} ms`);
    const restored = await run(fresh, ["import", file("drydock.ndjson")]);
    expect(restored.code, restored.stderr).to.equal(0);
    console.log(`      import of that file into a fresh database: ${restored.ms} ms`);
    const again2 = await run(fresh, ["export", "--include-secrets", "-f", file("drydock2.ndjson")]);
    expect(withoutTimestamp(readFileSync(file("drydock2.ndjson"), "utf8"))).to.equal(withoutTimestamp(readFileSync(file("drydock.ndjson"), "utf8")));
    expect(again2.code).to.equal(0);
    await fresh.client.verifyBootActionKey({ nodeName: "n1", identityKey: key2 });
  });
});
