import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ActionResult, FilterSetType, TaskStatus, type NodeFilterSchema } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { SubtaskFilter } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { expectError, expectInvalid, setStatus, useServer } from "./kit/index.js";

describe("tasks", () => {
  const h = useServer();

  describe("scenarios of the original suite", () => {
    it("round-trips a task's request context (user, external marker)", async () => {
      const ctx = { user: "sh8121", external_marker: "dc2e3ef1-dcb8-4c1a-9e3c-4b1d0f0d6a9e", roles: ["admin"], n: 3 };
      const { task } = await h.client.createTask({ action: "deploy_nodes", requestContext: ctx, createdBy: "sh8121" });
      const got = await h.client.getTask({ taskId: task!.taskId });
      expect(got.task!.requestContext).to.deep.equal(ctx);
      expect(got.task!.createdBy).to.equal("sh8121");
      // Stored as a JSON object, not a string.
      const { rows } = await h.pg.query("select jsonb_typeof(request_context) t, request_context->>'user' u from tasks where task_id = $1", [task!.taskId]);
      expect(rows[0]).to.deep.equal({ t: "object", u: "sh8121" });
    });

    it("round-trips a node filter exactly", async () => {
      const nodeFilter: MessageInitShape<typeof NodeFilterSchema> = {
        filterSetType: FilterSetType.INTERSECTION,
        filterSet: [
          {
            filterType: FilterSetType.UNION,
            nodeNames: ["compute01", "compute02"],
            nodeTags: ["tag1"],
            nodeLabels: { rack: "r1", "zone.kubernetes.io": "z" },
            rackNames: ["rack01"],
            rackLabels: { pod: "p1" },
          },
          { filterType: FilterSetType.INTERSECTION, nodeNames: [], nodeTags: [], nodeLabels: {}, rackNames: ["rack02"], rackLabels: {} },
        ],
      };
      const { task } = await h.client.createTask({ action: "prepare_nodes", nodeFilter });
      const { task: got } = await h.client.getTask({ taskId: task!.taskId });
      const strip = <T extends object>(m: T) => JSON.parse(JSON.stringify(m, (k, v) => (k === "$typeName" ? undefined : v)));
      expect(strip(got!.nodeFilter!)).to.deep.equal(strip(nodeFilter));
    });

    it("lists a subtask in its parent's subtask ids", async () => {
      const { task: parent } = await h.client.createTask({ action: "deploy_site" });
      const { task: child } = await h.client.createTask({ action: "deploy_nodes", parentTaskId: parent!.taskId });
      const { task: got } = await h.client.getTask({ taskId: parent!.taskId });
      expect(got!.subtaskIds).to.deep.equal([child!.taskId]);
      expect(got!.version).to.equal(parent!.version + 1n);
      expect(child!.parentTaskId).to.equal(parent!.taskId);
    });

    it("finds a task by id with its design_ref", async () => {
      const designRef = "http://raw.example.com/site/design.yaml";
      const { task } = await h.client.createTask({ action: "verify_site", designRef });
      const { task: got } = await h.client.getTask({ taskId: task!.taskId });
      expect(got!.designRef).to.equal(designRef);
      expect(got!.status).to.equal(TaskStatus.REQUESTED);
      expect(got!.result!.status).to.equal(ActionResult.INCOMPLETE);
      expect(got!.version).to.equal(1n);
    });
  });

  describe("CreateTask", () => {
    it("accepts a client-supplied id once; a retry gets ALREADY_EXISTS", async () => {
      const taskId = randomUUID();
      const { task } = await h.client.createTask({ taskId, action: "deploy_nodes", initialStatus: TaskStatus.QUEUED });
      expect(task!.taskId).to.equal(taskId);
      expect(task!.status).to.equal(TaskStatus.QUEUED);
      const d = await expectError(h.client.createTask({ taskId, action: "deploy_nodes" }), grpc.status.ALREADY_EXISTS);
      expect(d.errorInfo!.reason).to.equal("TASK_ALREADY_EXISTS");
      const { rows } = await h.pg.query("select count(*)::int n from tasks where task_id = $1", [taskId]);
      expect(rows[0].n).to.equal(1);
    });

    it("refuses a subtask of a finished task with FAILED_PRECONDITION and stores nothing", async () => {
      // Also what keeps PurgeTasks from deleting a subtask created while it
      // runs: a tree it sees finished can get no new task.
      const { task: parent } = await h.client.createTask({ action: "deploy_site" });
      await h.client.updateTask({ task: { taskId: parent!.taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
      const d = await expectError(h.client.createTask({ action: "deploy_nodes", parentTaskId: parent!.taskId }), grpc.status.FAILED_PRECONDITION);
      expect(d.errorInfo!.reason).to.equal("TASK_FINISHED");
      expect(d.message).to.contain(parent!.taskId);
      const { rows } = await h.pg.query("select count(*)::int n from tasks where parent_task_id = $1", [parent!.taskId]);
      expect(rows[0].n).to.equal(0);
      const { task: got } = await h.client.getTask({ taskId: parent!.taskId });
      expect(got!.version).to.equal(2n);
    });

    it("refuses an unknown parent with NOT_FOUND and stores nothing", async () => {
      const before = (await h.pg.query("select count(*)::int n from tasks")).rows[0].n;
      const parentTaskId = randomUUID();
      const d = await expectError(h.client.createTask({ action: "deploy_nodes", parentTaskId }), grpc.status.NOT_FOUND);
      expect(d.errorInfo!.reason).to.equal("TASK_NOT_FOUND");
      expect(d.message).to.contain(parentTaskId);
      expect((await h.pg.query("select count(*)::int n from tasks")).rows[0].n).to.equal(before);
    });

    const invalid: [string, Record<string, unknown>, string][] = [
      ["a missing action", {}, "action"],
      ["an action that breaks the pattern", { action: "Deploy-Nodes" }, "action"],
      ["an action over 64 characters", { action: "a".repeat(65) }, "action"],
      ["a malformed task_id", { action: "x", taskId: "not-a-uuid" }, "task_id"],
      ["a malformed parent_task_id", { action: "x", parentTaskId: "123" }, "parent_task_id"],
      ["a design_ref with an unsupported scheme", { action: "x", designRef: "ftp://h/x" }, "design_ref"],
      ["a design_ref without a scheme", { action: "x", designRef: "/etc/design.yaml" }, "design_ref"],
      ["a design_ref over 2048 characters", { action: "x", designRef: `https://h/${"a".repeat(2048)}` }, "design_ref"],
      ["a relative file design_ref", { action: "x", designRef: "file:design.yaml" }, "design_ref"],
      ["created_by over 255 characters", { action: "x", createdBy: "u".repeat(256) }, "created_by"],
      ["an initial status other than REQUESTED/QUEUED", { action: "x", initialStatus: TaskStatus.RUNNING }, "initial_status"],
      [
        "a node name over 255 characters",
        { action: "x", nodeFilter: { filterSet: [{ nodeNames: ["n".repeat(256)] }] } },
        "node_filter.filter_set[0].node_names[0]",
      ],
      ["a request context with NUL", { action: "x", requestContext: { a: "b\u0000c" } }, "request_context"],
      ["a request context over 64 KiB", { action: "x", requestContext: { a: "b".repeat(70_000) } }, "request_context"],
    ];
    for (const [what, req, field] of invalid) {
      it(`refuses ${what} with INVALID_ARGUMENT naming ${field}`, async () => {
        const before = (await h.pg.query("select count(*)::int n from tasks")).rows[0].n;
        await expectInvalid(h.client.createTask(req as never), field);
        expect((await h.pg.query("select count(*)::int n from tasks")).rows[0].n).to.equal(before);
      });
    }

    it("accepts every supported design_ref scheme", async () => {
      for (const designRef of [
        "file:///etc/drydock/site.yaml",
        "http://h:8080/site.yaml",
        "https://h/site.yaml",
        "deckhand+http://deckhand:9000/api/v1.0/revisions/7/rendered-documents",
        "deckhand+https://deckhand-api.ucp.svc.cluster.local:8443/e50b4d74-4c0a-4e9b-b9c2-8e6a4f1f7c1a",
      ]) {
        const { task } = await h.client.createTask({ action: "x", designRef });
        expect(task!.designRef).to.equal(designRef);
      }
    });

    it("never leaks credentials of a refused design_ref", async () => {
      const d = await expectInvalid(h.client.createTask({ action: "x", designRef: "gopher://alice:s3cret@h/x" }), "design_ref");
      expect(d.message).not.to.contain("s3cret");
      expect(JSON.stringify(d.badRequest)).not.to.contain("s3cret");
    });
  });

  describe("GetTask", () => {
    it("answers NOT_FOUND for an unknown id", async () => {
      const taskId = randomUUID();
      const d = await expectError(h.client.getTask({ taskId }), grpc.status.NOT_FOUND);
      expect(d.errorInfo!.metadata.task_id).to.equal(taskId);
    });
    it("answers INVALID_ARGUMENT for a malformed id", async () => {
      await expectInvalid(h.client.getTask({ taskId: "abc" }), "task_id");
      await expectInvalid(h.client.getTask({ taskId: "" }), "task_id");
    });
  });

  describe("UpdateTask", () => {
    it("changes only the masked fields and bumps version and updated", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes", designRef: "https://h/a" });
      const { task: up } = await h.client.updateTask({
        task: {
          taskId: task!.taskId,
          status: TaskStatus.RUNNING,
          designRef: "https://h/ignored",
          result: {
            status: ActionResult.PARTIAL_SUCCESS,
            message: "2 of 3",
            successes: ["n1", "n2"],
            failures: ["n3"],
            links: [{ rel: "log", href: "https://h/log" }],
          },
        },
        updateMask: { paths: ["status", "result"] },
      });
      expect(up!.status).to.equal(TaskStatus.RUNNING);
      expect(up!.designRef).to.equal("https://h/a");
      expect(up!.result!.status).to.equal(ActionResult.PARTIAL_SUCCESS);
      expect(up!.result!.message).to.equal("2 of 3");
      expect(up!.result!.successes).to.deep.equal(["n1", "n2"]);
      expect(up!.result!.failures).to.deep.equal(["n3"]);
      expect(up!.result!.links.map((l) => [l.rel, l.href])).to.deep.equal([["log", "https://h/log"]]);
      expect(up!.version).to.equal(2n);
      const upd = (t: typeof up) => t!.updated!.seconds * 1_000_000n + BigInt(t!.updated!.nanos / 1000);
      expect(upd(up) > upd(task)).to.equal(true);
    });

    it("applies expected_version and answers ABORTED with the current version on mismatch", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes" });
      await h.client.updateTask({ task: { taskId: task!.taskId, retry: 1 }, updateMask: { paths: ["retry"] }, expectedVersion: 1n });
      const d = await expectError(
        h.client.updateTask({ task: { taskId: task!.taskId, retry: 5 }, updateMask: { paths: ["retry"] }, expectedVersion: 1n }),
        grpc.status.ABORTED,
      );
      expect(d.errorInfo!.reason).to.equal("VERSION_MISMATCH");
      expect(d.errorInfo!.metadata.current_version).to.equal("2");
      const { task: got } = await h.client.getTask({ taskId: task!.taskId });
      expect(got!.retry).to.equal(1);
    });

    it("never lets a task leave COMPLETE or TERMINATED", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes" });
      await h.client.updateTask({ task: { taskId: task!.taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
      for (const status of [TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.TERMINATED]) {
        const d = await expectError(
          h.client.updateTask({ task: { taskId: task!.taskId, status }, updateMask: { paths: ["status"] } }),
          grpc.status.FAILED_PRECONDITION,
        );
        expect(d.errorInfo!.reason).to.equal("TASK_FINISHED");
      }
      const { task: got } = await h.client.getTask({ taskId: task!.taskId });
      expect(got!.status).to.equal(TaskStatus.COMPLETE);
      expect(got!.version).to.equal(2n);
    });

    it("refuses TERMINATING or TERMINATED without a termination request, and changes nothing", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes", initialStatus: TaskStatus.QUEUED });
      for (const status of [TaskStatus.TERMINATING, TaskStatus.TERMINATED]) {
        const d = await expectError(
          h.client.updateTask({ task: { taskId: task!.taskId, status }, updateMask: { paths: ["status"] } }),
          grpc.status.FAILED_PRECONDITION,
        );
        expect(d.errorInfo!.reason).to.equal("TERMINATION_NOT_REQUESTED");
      }
      const { task: got } = await h.client.getTask({ taskId: task!.taskId });
      expect([got!.status, got!.terminate, got!.version]).to.deep.equal([TaskStatus.QUEUED, false, 1n]);
      // After TerminateTask the orchestrator may finish it as TERMINATED.
      await h.client.terminateTask({ taskId: task!.taskId, terminatedBy: "op" });
      const { task: done } = await h.client.updateTask({ task: { taskId: task!.taskId, status: TaskStatus.TERMINATED }, updateMask: { paths: ["status"] } });
      expect(done!.status).to.equal(TaskStatus.TERMINATED);
    });

    it("keeps a stale writer from moving a terminating task back to running", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes", initialStatus: TaskStatus.QUEUED });
      await h.client.terminateTask({ taskId: task!.taskId, terminatedBy: "op" });
      const d = await expectError(
        h.client.updateTask({ task: { taskId: task!.taskId, status: TaskStatus.RUNNING }, updateMask: { paths: ["status"] } }),
        grpc.status.FAILED_PRECONDITION,
      );
      expect(d.errorInfo!.reason).to.equal("TASK_TERMINATING");
      const { task: done } = await h.client.updateTask({
        task: { taskId: task!.taskId, status: TaskStatus.TERMINATED },
        updateMask: { paths: ["status"] },
      });
      expect(done!.status).to.equal(TaskStatus.TERMINATED);
    });

    it("refuses bad masks and values, naming the field, and changes nothing", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes" });
      const id = task!.taskId;
      await expectInvalid(h.client.updateTask({ task: { taskId: id } }), "update_mask");
      await expectInvalid(h.client.updateTask({ task: { taskId: id }, updateMask: { paths: ["action"] } }), "update_mask");
      await expectInvalid(h.client.updateTask({ task: { taskId: id }, updateMask: { paths: ["status"] } }), "task.status");
      await expectInvalid(
        h.client.updateTask({ task: { taskId: id, result: { message: "m".repeat(1025) } }, updateMask: { paths: ["result.message"] } }),
        "task.result.message",
      );
      await expectInvalid(h.client.updateTask({ task: { taskId: id, retry: -1 }, updateMask: { paths: ["retry"] } }), "task.retry");
      await expectInvalid(h.client.updateTask({ task: { taskId: "x" }, updateMask: { paths: ["retry"] } }), "task.task_id");
      const { task: got } = await h.client.getTask({ taskId: id });
      expect(got!.version).to.equal(1n);
    });

    it("answers NOT_FOUND for an unknown task", async () => {
      await expectError(h.client.updateTask({ task: { taskId: randomUUID(), retry: 1 }, updateMask: { paths: ["retry"] } }), grpc.status.NOT_FOUND);
    });
  });

  describe("TerminateTask", () => {
    it("marks the task, moves it to TERMINATING and is idempotent", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes", initialStatus: TaskStatus.QUEUED });
      const { task: t1 } = await h.client.terminateTask({ taskId: task!.taskId, terminatedBy: "operator" });
      expect(t1!.status).to.equal(TaskStatus.TERMINATING);
      expect(t1!.terminate).to.equal(true);
      expect(t1!.terminatedBy).to.equal("operator");
      expect(t1!.terminated).to.exist;
      const { task: t2 } = await h.client.terminateTask({ taskId: task!.taskId, terminatedBy: "someone-else" });
      expect(t2!.version).to.equal(t1!.version);
      expect(t2!.terminatedBy).to.equal("operator");
    });
    it("refuses a finished task with FAILED_PRECONDITION", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes" });
      await h.client.updateTask({ task: { taskId: task!.taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
      const d = await expectError(h.client.terminateTask({ taskId: task!.taskId }), grpc.status.FAILED_PRECONDITION);
      expect(d.errorInfo!.reason).to.equal("TASK_FINISHED");
    });
    it("answers NOT_FOUND for an unknown task", async () => {
      await expectError(h.client.terminateTask({ taskId: randomUUID() }), grpc.status.NOT_FOUND);
    });
  });

  describe("ListSubtasks", () => {
    it("filters ALL, ACTIVE and COMPLETE", async () => {
      const { task: parent } = await h.client.createTask({ action: "deploy_site" });
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        ids.push((await h.client.createTask({ action: "deploy_nodes", parentTaskId: parent!.taskId })).task!.taskId);
      }
      await setStatus(h.client, ids[0]!, TaskStatus.COMPLETE);
      await h.client.terminateTask({ taskId: ids[1]!, terminatedBy: "op" });
      await setStatus(h.client, ids[1]!, TaskStatus.TERMINATED);
      await setStatus(h.client, ids[2]!, TaskStatus.RUNNING);
      const list = async (filter: SubtaskFilter) => (await h.client.listSubtasks({ parentTaskId: parent!.taskId, filter })).tasks.map((t) => t.taskId);
      expect(await list(SubtaskFilter.ALL)).to.deep.equal(ids);
      expect(await list(SubtaskFilter.UNSPECIFIED)).to.deep.equal(ids);
      expect(await list(SubtaskFilter.ACTIVE)).to.deep.equal([ids[2], ids[3]]);
      expect(await list(SubtaskFilter.COMPLETE)).to.deep.equal([ids[0]]);
    });
    it("answers NOT_FOUND for an unknown parent", async () => {
      await expectError(h.client.listSubtasks({ parentTaskId: randomUUID() }), grpc.status.NOT_FOUND);
    });
  });

  describe("ClaimNextTask", () => {
    it("claims the oldest queued task with an allowed action, and nothing when there is none", async () => {
      const { task: a } = await h.client.createTask({ action: "claim_a", initialStatus: TaskStatus.QUEUED });
      await h.client.createTask({ action: "claim_b", initialStatus: TaskStatus.QUEUED });
      await h.client.createTask({ action: "claim_a" }); // REQUESTED: not claimable
      const { task } = await h.client.claimNextTask({ instanceId: "orch-1", actions: ["claim_a"] });
      expect(task!.taskId).to.equal(a!.taskId);
      expect(task!.status).to.equal(TaskStatus.RUNNING);
      expect(task!.claimedBy).to.equal("orch-1");
      expect(task!.claimedAt).to.exist;
      const none = await h.client.claimNextTask({ instanceId: "orch-1", actions: ["claim_a"] });
      expect(none.task).to.equal(undefined);
    });
    it("requires an instance id", async () => {
      await expectInvalid(h.client.claimNextTask({ instanceId: "" }), "instance_id");
      await expectInvalid(h.client.claimNextTask({ instanceId: "i", actions: ["Bad"] }), "actions[0]");
    });
  });

  describe("PurgeTasks", () => {
    it("deletes old finished trees at every depth with their messages, and nothing else", async () => {
      const mk = async (parentTaskId = "") => (await h.client.createTask({ action: "purge_me", parentTaskId })).task!.taskId;
      const root = await mk();
      const child = await mk(root);
      const grandchild = await mk(child);
      const unfinishedRoot = await mk();
      const rootWithActiveChild = await mk();
      const activeChild = await mk(rootWithActiveChild);
      const recentRoot = await mk();
      for (const id of [root, child, grandchild, rootWithActiveChild, recentRoot]) {
        await h.client.updateTask({ task: { taskId: id, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
      }
      await h.pg.query("insert into result_messages (task_id, seq, message) values ($1, 1, 'a'), ($2, 1, 'b'), ($2, 2, 'c')", [root, grandchild]);
      await h.pg.query("update tasks set updated = now() - interval '10 days' where task_id = any($1)", [[root, rootWithActiveChild, unfinishedRoot]]);
      const res = await h.client.purgeTasks({ olderThanDays: 7 });
      expect(res.tasksDeleted).to.equal(3n);
      expect(res.resultMessagesDeleted).to.equal(3n);
      const { rows } = await h.pg.query("select task_id from tasks where task_id = any($1)", [
        [root, child, grandchild, unfinishedRoot, rootWithActiveChild, activeChild, recentRoot],
      ]);
      expect(rows.map((r) => r.task_id).sort()).to.deep.equal([unfinishedRoot, rootWithActiveChild, activeChild, recentRoot].sort());
      expect((await h.pg.query("select count(*)::int n from result_messages where task_id = any($1)", [[root, grandchild]])).rows[0].n).to.equal(0);
    });
    it("refuses a negative age", async () => {
      await expectInvalid(h.client.purgeTasks({ olderThanDays: -1 }), "older_than_days");
    });
  });
});
