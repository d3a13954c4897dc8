import { createHash, randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { expect } from "chai";
import { BootActionStatus } from "../gen/drydock/statemgmt/v1/boot_action_pb.js";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import { watchTask } from "../src/client/stateClient.js";
import { eventually, expectError, expectInvalid, lockWaiters, useServer, type StateClient } from "./kit/index.js";

const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

async function deployTask(client: StateClient): Promise<string> {
  return (await client.createTask({ action: "deploy_nodes" })).task!.taskId;
}

/** A node being deployed by `taskId`, with the key the server generated for it. */
async function deployingNode(client: StateClient, nodeName: string, taskId: string): Promise<Buffer> {
  const res = await client.setBootActionContext({ nodeName, taskId });
  return Buffer.from(res.generatedIdentityKey);
}

describe("boot actions", () => {
  const h = useServer({ dbPoolSize: 12, dbTxPoolSize: 5 });

  describe("contexts", () => {
    it("generates a 32-byte key once, stores only its SHA-256, and never returns it again", async () => {
      const taskId = await deployTask(h.client);
      const set = await h.client.setBootActionContext({ nodeName: "node-key", taskId });
      expect(set.generatedIdentityKey).to.have.length(32);
      expect(set.context!.nodeName).to.equal("node-key");
      expect(set.context!.taskId).to.equal(taskId);
      const stored = await h.pg.query("select identity_key_sha256 from boot_action_contexts where node_name = $1", ["node-key"]);
      expect(Buffer.from(stored.rows[0].identity_key_sha256).equals(createHash("sha256").update(set.generatedIdentityKey).digest())).to.equal(true);
      const got = await h.client.getBootActionContext({ nodeName: "node-key" });
      expect(got.context!.taskId).to.equal(taskId);
      expect(Object.keys(got.context!)).to.not.include("identityKey");
    });

    it("takes a key from the orchestrator (Drydock's os.urandom(32)) and returns none", async () => {
      const taskId = await deployTask(h.client);
      const key = randomBytes(32);
      const set = await h.client.setBootActionContext({ nodeName: "node-own-key", taskId, identityKey: key });
      expect(set.generatedIdentityKey).to.have.length(0);
      const verified = await h.client.verifyBootActionKey({ nodeName: "node-own-key", identityKey: key });
      expect(verified.context!.taskId).to.equal(taskId);
    });

    it("replaces the task and the key on a new deployment of the node", async () => {
      const first = await deployTask(h.client);
      const second = await deployTask(h.client);
      const oldKey = await deployingNode(h.client, "node-redeploy", first);
      const newKey = await deployingNode(h.client, "node-redeploy", second);
      expect((await h.client.getBootActionContext({ nodeName: "node-redeploy" })).context!.taskId).to.equal(second);
      const d = await expectError(h.client.verifyBootActionKey({ nodeName: "node-redeploy", identityKey: oldKey }), grpc.status.PERMISSION_DENIED);
      expect(d.errorInfo!.reason).to.equal("IDENTITY_KEY_MISMATCH");
      expect(d.message).to.not.contain(oldKey.toString("hex"));
      await h.client.verifyBootActionKey({ nodeName: "node-redeploy", identityKey: newKey });
      const count = await h.pg.query("select count(*)::int as n from boot_action_contexts where node_name = 'node-redeploy'");
      expect(count.rows[0].n).to.equal(1);
    });

    it("refuses bad input naming the field, and an unknown task or node with NOT_FOUND", async () => {
      const taskId = await deployTask(h.client);
      await expectInvalid(h.client.setBootActionContext({ nodeName: "", taskId }), "node_name");
      await expectInvalid(h.client.setBootActionContext({ nodeName: "n".repeat(281), taskId }), "node_name");
      await expectInvalid(h.client.setBootActionContext({ nodeName: "n", taskId: "nope" }), "task_id");
      await expectInvalid(h.client.setBootActionContext({ nodeName: "n", taskId, identityKey: randomBytes(16) }), "identity_key");
      const missing = await expectError(
        h.client.setBootActionContext({ nodeName: "n", taskId: "00000000-0000-4000-8000-000000000000" }),
        grpc.status.NOT_FOUND,
      );
      expect(missing.errorInfo!.reason).to.equal("TASK_NOT_FOUND");
      const none = await expectError(h.client.getBootActionContext({ nodeName: "never-deployed" }), grpc.status.NOT_FOUND);
      expect(none.errorInfo!.reason).to.equal("BOOT_ACTION_CONTEXT_NOT_FOUND");
      expect(none.errorInfo!.metadata).to.deep.equal({ node_name: "never-deployed" });
      await h.client.setBootActionContext({ nodeName: "n".repeat(280), taskId });
      const rows = await h.pg.query("select count(*)::int as n from boot_action_contexts where node_name = 'n'");
      expect(rows.rows[0].n).to.equal(0);
    });
  });

  describe("actions", () => {
    it("posts a boot action and reads it back (Drydock's test_bootaction_post)", async () => {
      const taskId = await deployTask(h.client);
      await deployingNode(h.client, "node-post", taskId);
      const before = Date.now();
      const { bootActions } = await h.client.createBootActions({ nodeName: "node-post", taskId, actions: [{ actionName: "helloworld", signalling: true }] });
      expect(bootActions).to.have.length(1);
      const a = bootActions[0]!;
      expect(a.actionId).to.match(ULID_RE);
      expect(a).to.include({ nodeName: "node-post", actionName: "helloworld", taskId, signalling: true, status: BootActionStatus.INCOMPLETE });
      expect(Number(a.created!.seconds) * 1000).to.be.within(before - 5000, Date.now() + 5000);
      expect(a.reported).to.equal(undefined);
      const got = (await h.client.getBootAction({ actionId: a.actionId })).bootAction!;
      expect(got).to.deep.equal(a);
      // Crockford base32 is case-insensitive: a lower-case id names the same action.
      expect((await h.client.getBootAction({ actionId: a.actionId.toLowerCase() })).bootAction!.actionId).to.equal(a.actionId);
    });

    it("starts a signalling action INCOMPLETE and a non-signalling one UNREPORTED (Drydock's two-action node)", async () => {
      const taskId = await deployTask(h.client);
      await deployingNode(h.client, "node-two", taskId);
      const { bootActions } = await h.client.createBootActions({
        nodeName: "node-two",
        taskId,
        actions: [
          { actionName: "signalled", signalling: true },
          { actionName: "silent", signalling: false },
        ],
      });
      expect(bootActions.map((a) => [a.actionName, a.status])).to.deep.equal([
        ["signalled", BootActionStatus.INCOMPLETE],
        ["silent", BootActionStatus.UNREPORTED],
      ]);
      const listed = await h.client.listBootActions({ nodeName: "node-two" });
      expect(listed.bootActions.map((a) => [a.actionName, a.status])).to.deep.equal([
        ["signalled", BootActionStatus.INCOMPLETE],
        ["silent", BootActionStatus.UNREPORTED],
      ]);
      expect(listed.bootActions[0]!.actionId < listed.bootActions[1]!.actionId).to.equal(true);
    });

    it("lists a node's actions of every deployment, same names included, and pages by action_id", async () => {
      const first = await deployTask(h.client);
      const second = await deployTask(h.client);
      await deployingNode(h.client, "node-hist", first);
      await h.client.createBootActions({
        nodeName: "node-hist",
        taskId: first,
        actions: [
          { actionName: "a", signalling: true },
          { actionName: "b", signalling: true },
        ],
      });
      await deployingNode(h.client, "node-hist", second);
      await h.client.createBootActions({
        nodeName: "node-hist",
        taskId: second,
        actions: [
          { actionName: "a", signalling: true },
          { actionName: "b", signalling: false },
        ],
      });
      const all = await h.client.listBootActions({ nodeName: "node-hist" });
      expect(all.bootActions.map((a) => [a.actionName, a.taskId])).to.deep.equal([
        ["a", first],
        ["b", first],
        ["a", second],
        ["b", second],
      ]);
      expect(all.nextPageToken).to.equal("");
      const ofSecond = await h.client.listBootActions({ taskId: second });
      expect(ofSecond.bootActions.map((a) => a.actionName)).to.deep.equal(["a", "b"]);
      const paged: string[] = [];
      let token = "";
      do {
        const page = await h.client.listBootActions({ nodeName: "node-hist", pageSize: 3, pageToken: token });
        expect(page.bootActions.length).to.be.at.most(3);
        paged.push(...page.bootActions.map((a) => a.actionId));
        token = page.nextPageToken;
      } while (token !== "");
      expect(paged).to.deep.equal(all.bootActions.map((a) => a.actionId));
      const foreign = await expectError(
        h.client.listBootActions({
          nodeName: "other",
          pageSize: 3,
          pageToken: (await h.client.listBootActions({ nodeName: "node-hist", pageSize: 3 })).nextPageToken,
        }),
        grpc.status.INVALID_ARGUMENT,
      );
      expect(foreign.badRequest!.fieldViolations[0]!.field).to.equal("page_token");
    });

    it("refuses duplicate names, in one request or against stored ones, creating nothing", async () => {
      const taskId = await deployTask(h.client);
      await deployingNode(h.client, "node-dup", taskId);
      const d = await expectInvalid(
        h.client.createBootActions({
          nodeName: "node-dup",
          taskId,
          actions: [
            { actionName: "x", signalling: true },
            { actionName: "x", signalling: false },
          ],
        }),
        "actions[1].action_name",
      );
      expect(d.message).to.contain("repeats actions[0].action_name");
      await h.client.createBootActions({ nodeName: "node-dup", taskId, actions: [{ actionName: "x", signalling: true }] });
      const taken = await expectError(
        h.client.createBootActions({
          nodeName: "node-dup",
          taskId,
          actions: [
            { actionName: "y", signalling: true },
            { actionName: "x", signalling: true },
          ],
        }),
        grpc.status.ALREADY_EXISTS,
      );
      expect(taken.errorInfo!.reason).to.equal("BOOT_ACTION_ALREADY_EXISTS");
      expect(taken.errorInfo!.metadata).to.deep.equal({ action_name: "x" });
      const names = await h.pg.query("select action_name from boot_actions where node_name = 'node-dup' order by action_name");
      expect(names.rows.map((r) => r.action_name)).to.deep.equal(["x"]);
    });

    it("keeps a client-chosen action_id (Drydock's own ULID), refusing one already taken", async () => {
      const taskId = await deployTask(h.client);
      await deployingNode(h.client, "node-own-id", taskId);
      const chosen = "01hgw2n7ejwzq7c8v5m3x9k2aa"; // lower case: stored and returned upper case
      const made = await h.client.createBootActions({
        nodeName: "node-own-id",
        taskId,
        actions: [
          { actionName: "mine", signalling: true, actionId: chosen },
          { actionName: "theirs", signalling: false },
        ],
      });
      expect(made.bootActions.map((a) => a.actionId)[0]).to.equal("01HGW2N7EJWZQ7C8V5M3X9K2AA");
      expect(made.bootActions[1]!.actionId).to.match(ULID_RE);
      expect(made.bootActions[1]!.actionId).to.not.equal("01HGW2N7EJWZQ7C8V5M3X9K2AA");
      const got = await h.client.getBootAction({ actionId: "01HGW2N7EJWZQ7C8V5M3X9K2AA" });
      expect(got.bootAction!.actionName).to.equal("mine");
      expect(got.bootAction!.status).to.equal(BootActionStatus.INCOMPLETE);

      // Reused by another node's deployment: refused, and nothing of the request is created.
      const other = await deployTask(h.client);
      await deployingNode(h.client, "node-other-id", other);
      const taken = await expectError(
        h.client.createBootActions({
          nodeName: "node-other-id",
          taskId: other,
          actions: [
            { actionName: "fresh", signalling: true },
            { actionName: "copy", signalling: true, actionId: "01HGW2N7EJWZQ7C8V5M3X9K2AA" },
          ],
        }),
        grpc.status.ALREADY_EXISTS,
      );
      expect(taken.errorInfo!.reason).to.equal("BOOT_ACTION_ALREADY_EXISTS");
      expect(taken.errorInfo!.metadata).to.deep.equal({ action_id: "01HGW2N7EJWZQ7C8V5M3X9K2AA" });
      const rows = await h.pg.query("select count(*)::int as n from boot_actions where node_name = 'node-other-id'");
      expect(rows.rows[0].n).to.equal(0);

      const bad = [
        [{ actionName: "a", signalling: true, actionId: "" }, "actions[0].action_id"],
        [{ actionName: "a", signalling: true, actionId: "01HGW2N7EJWZQ7C8V5M3X9K2A" }, "actions[0].action_id"],
        [{ actionName: "a", signalling: true, actionId: "81HGW2N7EJWZQ7C8V5M3X9K2AA" }, "actions[0].action_id"],
      ] as const;
      for (const [action, field] of bad) {
        await expectInvalid(h.client.createBootActions({ nodeName: "node-other-id", taskId: other, actions: [action] }), field);
      }
      const twice = await expectInvalid(
        h.client.createBootActions({
          nodeName: "node-other-id",
          taskId: other,
          actions: [
            { actionName: "a", signalling: true, actionId: "01HGW2N7EJWZQ7C8V5M3X9K2BB" },
            { actionName: "b", signalling: true, actionId: "01hgw2n7ejwzq7c8v5m3x9k2bb" },
          ],
        }),
        "actions[1].action_id",
      );
      expect(twice.message).to.contain("repeats actions[0].action_id");
    });

    it("needs the node's context for the same task", async () => {
      const taskId = await deployTask(h.client);
      const other = await deployTask(h.client);
      const none = await expectError(
        h.client.createBootActions({ nodeName: "node-nocontext", taskId, actions: [{ actionName: "a", signalling: true }] }),
        grpc.status.NOT_FOUND,
      );
      expect(none.errorInfo!.reason).to.equal("BOOT_ACTION_CONTEXT_NOT_FOUND");
      await deployingNode(h.client, "node-mismatch", other);
      const mismatch = await expectError(
        h.client.createBootActions({ nodeName: "node-mismatch", taskId, actions: [{ actionName: "a", signalling: true }] }),
        grpc.status.FAILED_PRECONDITION,
      );
      expect(mismatch.errorInfo!.reason).to.equal("BOOT_ACTION_CONTEXT_MISMATCH");
      expect(mismatch.errorInfo!.metadata).to.deep.equal({ node_name: "node-mismatch", context_task_id: other });
      const rows = await h.pg.query("select count(*)::int as n from boot_actions where node_name in ('node-nocontext', 'node-mismatch')");
      expect(rows.rows[0].n).to.equal(0);
    });

    it("validates ids and names", async () => {
      const taskId = await deployTask(h.client);
      await expectInvalid(h.client.getBootAction({ actionId: "" }), "action_id");
      for (const bad of [
        "01ARZ3NDEKTSV4RRFFQ69G5FA",
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",
        "01ARZ3NDEKTSV4RRFFQ69G5FAU",
        "01ARZ3NDEKTSV4RRFFQ69G5FA!",
      ]) {
        await expectInvalid(h.client.getBootAction({ actionId: bad }), "action_id");
      }
      const missing = await expectError(h.client.getBootAction({ actionId: "01ARZ3NDEKTSV4RRFFQ69G5FAV" }), grpc.status.NOT_FOUND);
      expect(missing.errorInfo!.reason).to.equal("BOOT_ACTION_NOT_FOUND");
      expect(missing.errorInfo!.metadata).to.deep.equal({ action_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV" });
      await expectInvalid(h.client.createBootActions({ nodeName: "n", taskId, actions: [] }), "actions");
      await expectInvalid(h.client.createBootActions({ nodeName: "n", taskId, actions: [{ actionName: "", signalling: true }] }), "actions[0].action_name");
      await expectInvalid(
        h.client.createBootActions({ nodeName: "n", taskId, actions: [{ actionName: "a".repeat(257), signalling: true }] }),
        "actions[0].action_name",
      );
      await expectInvalid(h.client.listBootActions({ taskId: "x" }), "task_id");
      await expectInvalid(h.client.listBootActions({ pageSize: 1001 }), "page_size");
    });
  });

  describe("reports", () => {
    async function action(nodeName: string, signalling = true) {
      const taskId = await deployTask(h.client);
      const key = await deployingNode(h.client, nodeName, taskId);
      const { bootActions } = await h.client.createBootActions({ nodeName, taskId, actions: [{ actionName: "hello", signalling }] });
      return { taskId, key, actionId: bootActions[0]!.actionId };
    }

    it("answers each error of a report in order, changing nothing: no key, unknown action, wrong key, second report", async () => {
      const { taskId, key, actionId } = await action("node-errors");
      const noKey = await expectError(h.client.reportBootActionStatus({ actionId, status: BootActionStatus.SUCCESS }), grpc.status.UNAUTHENTICATED);
      expect(noKey.errorInfo!.reason).to.equal("IDENTITY_KEY_REQUIRED");
      const unknown = await expectError(
        h.client.reportBootActionStatus({ actionId: "01ARZ3NDEKTSV4RRFFQ69G5FAV", identityKey: key, status: BootActionStatus.SUCCESS }),
        grpc.status.NOT_FOUND,
      );
      expect(unknown.errorInfo!.reason).to.equal("BOOT_ACTION_NOT_FOUND");
      const wrongKey = randomBytes(32);
      const wrong = await expectError(
        h.client.reportBootActionStatus({ actionId, identityKey: wrongKey, status: BootActionStatus.SUCCESS, details: [{ message: "m" }] }),
        grpc.status.PERMISSION_DENIED,
      );
      expect(wrong.errorInfo!.reason).to.equal("IDENTITY_KEY_MISMATCH");
      expect(wrong.message).to.not.contain(wrongKey.toString("hex"));
      expect((await h.client.getBootAction({ actionId })).bootAction!.status).to.equal(BootActionStatus.INCOMPLETE);
      expect((await h.client.listResultMessages({ taskId })).messages).to.have.length(0);

      const ok = await h.client.reportBootActionStatus({
        actionId,
        identityKey: key,
        status: BootActionStatus.FAILURE,
        details: [{ message: "exit 1", error: true }],
      });
      expect(ok.bootAction!.status).to.equal(BootActionStatus.FAILURE);
      expect(ok.bootAction!.reported).to.not.equal(undefined);
      expect(ok.sequences).to.deep.equal([1n]);
      const again = await expectError(
        h.client.reportBootActionStatus({ actionId, identityKey: key, status: BootActionStatus.SUCCESS, details: [{ message: "late" }] }),
        grpc.status.FAILED_PRECONDITION,
      );
      expect(again.errorInfo!.reason).to.equal("BOOT_ACTION_ALREADY_REPORTED");
      expect(again.errorInfo!.metadata).to.deep.equal({ action_id: actionId, status: "FAILURE" });
      const after = await h.client.getTask({ taskId });
      expect(after.task!.result!.errorCount).to.equal(1);
      expect((await h.client.listResultMessages({ taskId })).messages.map((m) => m.message)).to.deep.equal(["exit 1"]);
      expect((await h.client.getBootAction({ actionId })).bootAction!.status).to.equal(BootActionStatus.FAILURE);
    });

    it("refuses a report on an UNREPORTED action and validates the report", async () => {
      const { key, actionId } = await action("node-silent", false);
      const d = await expectError(
        h.client.reportBootActionStatus({ actionId, identityKey: key, status: BootActionStatus.SUCCESS }),
        grpc.status.FAILED_PRECONDITION,
      );
      expect(d.errorInfo!.reason).to.equal("BOOT_ACTION_ALREADY_REPORTED");
      expect(d.errorInfo!.metadata!.status).to.equal("UNREPORTED");
      await expectInvalid(h.client.reportBootActionStatus({ actionId, identityKey: key }), "details");
      await expectInvalid(h.client.reportBootActionStatus({ actionId, identityKey: key, status: BootActionStatus.INCOMPLETE }), "status");
      await expectInvalid(h.client.reportBootActionStatus({ actionId, identityKey: key, status: 42 as BootActionStatus }), "status");
      await expectInvalid(h.client.reportBootActionStatus({ actionId, identityKey: key, details: [{ message: "" }] }), "details[0].message");
      await expectInvalid(h.client.reportBootActionStatus({ actionId, identityKey: key, details: [{ message: "x".repeat(1025) }] }), "details[0].message");
    });

    it("keys an action to the deployment that created it: a redeploy's new key cannot report on it", async () => {
      const { key: oldKey, actionId } = await action("node-keyed");
      const newTask = await deployTask(h.client);
      const newKey = await deployingNode(h.client, "node-keyed", newTask);
      const d = await expectError(
        h.client.reportBootActionStatus({ actionId, identityKey: newKey, status: BootActionStatus.SUCCESS }),
        grpc.status.PERMISSION_DENIED,
      );
      expect(d.errorInfo!.reason).to.equal("IDENTITY_KEY_MISMATCH");
      const ok = await h.client.reportBootActionStatus({ actionId, identityKey: oldKey, status: BootActionStatus.SUCCESS });
      expect(ok.bootAction!.status).to.equal(BootActionStatus.SUCCESS);
    });

    it("delivers a report's details once, in order, to a live WatchTask, as bootaction messages of the action", async () => {
      const { taskId, key, actionId } = await action("node-watched");
      const seen: { sequence: bigint; message: string; contextType: string; context: string; error: boolean }[] = [];
      let snapshots = 0;
      let live!: () => void;
      const streaming = new Promise<void>((resolve) => (live = resolve));
      const watching = (async () => {
        for await (const ev of watchTask(h.client, taskId)) {
          if (ev.event.case === "task") {
            snapshots++;
            live();
          }
          if (ev.event.case === "message") {
            const m = ev.event.value;
            seen.push({ sequence: m.sequence, message: m.message, contextType: m.contextType, context: m.context, error: m.error });
          }
        }
      })();
      await streaming;
      await h.client.reportBootActionStatus({ actionId, identityKey: key, details: [{ message: "step 1" }, { message: "step 2", error: true }] });
      const final = await h.client.reportBootActionStatus({
        actionId,
        identityKey: key,
        status: BootActionStatus.SUCCESS,
        details: [{ message: "done", extra: { exit_code: 0 } }],
      });
      expect(final.sequences).to.deep.equal([3n]);
      await h.client.updateTask({ task: { taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
      await watching;
      expect(snapshots).to.be.at.least(1);
      expect(seen).to.deep.equal([
        { sequence: 1n, message: "step 1", contextType: "bootaction", context: actionId, error: false },
        { sequence: 2n, message: "step 2", contextType: "bootaction", context: actionId, error: true },
        { sequence: 3n, message: "done", contextType: "bootaction", context: actionId, error: false },
      ]);
      const stored = await h.client.listResultMessages({ taskId });
      expect(stored.messages[2]!.extra).to.deep.equal({ exit_code: 0 });
    });

    it("stores every report of 200 nodes reporting at once exactly once", async function () {
      this.timeout(60_000);
      const taskId = await deployTask(h.client);
      const nodes = Array.from({ length: 200 }, (_, i) => `rack1-node${String(i).padStart(3, "0")}`);
      const keys = new Map<string, Buffer>();
      const actions = new Map<string, string>();
      for (const node of nodes) {
        keys.set(node, await deployingNode(h.client, node, taskId));
        const { bootActions } = await h.client.createBootActions({ nodeName: node, taskId, actions: [{ actionName: "promjoin", signalling: true }] });
        actions.set(node, bootActions[0]!.actionId);
      }
      // Each node its own channel, as separate machines would be.
      const clients = nodes.map(() => createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }));
      try {
        const outcomes = await Promise.allSettled(
          nodes.map((node, i) =>
            clients[i]!.reportBootActionStatus({
              actionId: actions.get(node)!,
              identityKey: keys.get(node)!,
              status: i % 10 === 0 ? BootActionStatus.FAILURE : BootActionStatus.SUCCESS,
              details: [{ message: `${node} joined`, error: i % 10 === 0 }],
            }),
          ),
        );
        const failed = outcomes.filter((o) => o.status === "rejected");
        expect(failed.map((f) => String((f as PromiseRejectedResult).reason))).to.deep.equal([]);
      } finally {
        clients.forEach((c) => c.close());
      }
      const messages = await h.pg.query("select seq, context, message from result_messages where task_id = $1 order by seq", [taskId]);
      expect(messages.rows.map((r) => Number(r.seq))).to.deep.equal(Array.from({ length: 200 }, (_, i) => i + 1));
      expect(new Set(messages.rows.map((r) => r.context)).size).to.equal(200);
      for (const row of messages.rows) {
        const node = row.message.replace(" joined", "");
        expect(row.context).to.equal(actions.get(node));
      }
      const statuses = await h.pg.query("select status, count(*)::int as n from boot_actions where task_id = $1 group by status order by status", [taskId]);
      expect(statuses.rows).to.deep.equal([
        { status: "failure", n: 20 },
        { status: "success", n: 180 },
      ]);
      expect((await h.client.getTask({ taskId })).task!.result!.errorCount).to.equal(20);
    });
  });

  describe("conflicts", () => {
    it("answers a report the database broke a deadlock on with ABORTED TRANSACTION_CONFLICT, writing nothing", async function () {
      this.timeout(20_000);
      const taskId = await deployTask(h.client);
      const key = await deployingNode(h.client, "node-deadlock", taskId);
      const [a] = (await h.client.createBootActions({ nodeName: "node-deadlock", taskId, actions: [{ actionName: "x", signalling: true }] })).bootActions;
      const other = new pg.Client({ connectionString: h.dbUrl });
      await other.connect();
      try {
        // The other session waits longer before checking for deadlocks, so the report's session finds the cycle.
        await other.query("set deadlock_timeout = '10s'");
        await other.query("begin");
        await other.query("select 1 from tasks where task_id = $1 for update", [taskId]);
        // The report locks its action row, then waits for the task row (to append its detail).
        const report = expectError(
          h.client.reportBootActionStatus({ actionId: a!.actionId, identityKey: key, status: BootActionStatus.SUCCESS, details: [{ message: "m" }] }),
          grpc.status.ABORTED,
        );
        await eventually(async () => (await lockWaiters(h.pg, "any")) >= 1, 10_000, "a session waiting for a lock");
        const closing = other.query("select 1 from boot_actions where action_id = $1 for update", [a!.actionId]);
        const d = await report;
        expect(d.errorInfo!.reason).to.equal("TRANSACTION_CONFLICT");
        await closing;
        await other.query("rollback");
      } finally {
        await other.end();
      }
      expect((await h.client.getBootAction({ actionId: a!.actionId })).bootAction!.status).to.equal(BootActionStatus.INCOMPLETE);
      expect((await h.client.listResultMessages({ taskId })).messages).to.have.length(0);
    });
  });

  describe("purging", () => {
    it("deletes the boot actions of purged tasks, and the context of a node whose last deployment was purged", async () => {
      const old = await deployTask(h.client);
      const current = await deployTask(h.client);
      await deployingNode(h.client, "node-purge-a", old);
      await h.client.createBootActions({
        nodeName: "node-purge-a",
        taskId: old,
        actions: [
          { actionName: "a", signalling: true },
          { actionName: "b", signalling: false },
        ],
      });
      await deployingNode(h.client, "node-purge-b", old);
      await h.client.createBootActions({ nodeName: "node-purge-b", taskId: old, actions: [{ actionName: "a", signalling: true }] });
      // node-purge-b is redeployed by the current task: its context stays.
      await deployingNode(h.client, "node-purge-b", current);
      await h.client.createBootActions({ nodeName: "node-purge-b", taskId: current, actions: [{ actionName: "a", signalling: true }] });
      await h.client.updateTask({ task: { taskId: old, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
      // older_than_days 0 purges every finished tree: this one, and those earlier tests finished.
      const finished = `from tasks t where t.status in ('complete', 'terminated')`;
      const expected = await h.pg.query(
        `select (select count(*)::int from boot_actions b where b.task_id in (select task_id ${finished})) as actions,
                (select count(*)::int from boot_action_contexts c where c.task_id in (select task_id ${finished})) as contexts`,
      );
      expect(expected.rows[0].actions).to.be.at.least(3);
      const purged = await h.client.purgeTasks({ olderThanDays: 0 });
      expect(purged.bootActionsDeleted).to.equal(BigInt(expected.rows[0].actions));
      expect(purged.bootActionContextsDeleted).to.equal(BigInt(expected.rows[0].contexts));
      const left = await h.pg.query("select node_name, task_id from boot_actions where node_name like 'node-purge-%' order by node_name");
      expect(left.rows).to.deep.equal([{ node_name: "node-purge-b", task_id: current }]);
      await expectError(h.client.getBootActionContext({ nodeName: "node-purge-a" }), grpc.status.NOT_FOUND);
      expect((await h.client.getBootActionContext({ nodeName: "node-purge-b" })).context!.taskId).to.equal(current);
    });
  });
});
