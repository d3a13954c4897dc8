import { expect } from "chai";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient } from "../src/client/client.js";
import { useServer, type StateClient } from "./harness.js";

describe("concurrency", () => {
  const h = useServer({ dbPoolSize: 20 });

  it("20 concurrent claimers over 200 queued tasks claim each task exactly once", async function () {
    this.timeout(60_000);
    const created: string[] = [];
    for (let i = 0; i < 200; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => h.client.createTask({ action: "deploy_nodes", initialStatus: TaskStatus.QUEUED })));
      created.push(...batch.map((r) => r.task!.taskId));
    }
    // Separate channels, so claims really arrive concurrently.
    const clients: StateClient[] = Array.from({ length: 20 }, () =>
      createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }),
    );
    const claimedBy = new Map<string, string[]>();
    await Promise.all(
      clients.map(async (c, i) => {
        const me = `orch-${i}`;
        for (;;) {
          const { task } = await c.claimNextTask({ instanceId: me });
          if (!task) return;
          expect(task.status).to.equal(TaskStatus.RUNNING);
          expect(task.claimedBy).to.equal(me);
          claimedBy.set(task.taskId, [...(claimedBy.get(task.taskId) ?? []), me]);
        }
      }),
    );
    clients.forEach((c) => c.close());
    const twice = [...claimedBy].filter(([, who]) => who.length > 1);
    expect(twice, "claimed more than once").to.deep.equal([]);
    expect([...claimedBy.keys()].sort()).to.deep.equal([...created].sort());
    const { rows } = await h.pg.query("select status, count(*)::int n, count(distinct claimed_by)::int who from tasks group by status");
    expect(rows).to.have.length(1);
    expect(rows[0].status).to.equal("running");
    expect(rows[0].n).to.equal(200);
    expect(rows[0].who).to.be.greaterThan(1); // the work really was spread over claimers
  });

  it("pages over 2,500 tasks while others are inserted: every pre-existing task once, in order", async function () {
    this.timeout(120_000);
    await h.pg.query("delete from tasks");
    // Bulk-load the pre-existing tasks (distinct created times, some equal, to exercise the task_id tie-break).
    await h.pg.query(`
      insert into tasks (task_id, action, status, created, updated)
      select gen_random_uuid(), 'preexisting', 'requested',
             now() - interval '1 hour' + (i / 2) * interval '1 millisecond', now()
      from generate_series(1, 2500) i`);
    const { rows } = await h.pg.query("select task_id from tasks order by created, task_id");
    const expected = rows.map((r) => r.task_id as string);

    let inserting = true;
    const inserted: string[] = [];
    const writer = (async () => {
      while (inserting) {
        const { task } = await h.client.createTask({ action: "concurrent" });
        inserted.push(task!.taskId);
      }
    })();
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const res = await h.client.listTasks({ pageSize: 100, pageToken, actions: ["preexisting", "concurrent"] });
      seen.push(...res.tasks.map((t) => t.taskId));
      pageToken = res.nextPageToken;
      pages++;
    } while (pageToken && pages < 1000);
    inserting = false;
    await writer;

    const pre = seen.filter((id) => expected.includes(id));
    expect(pre).to.deep.equal(expected);
    expect(new Set(seen).size).to.equal(seen.length);
    expect(inserted.length).to.be.greaterThan(0);
  });
});
