import { createClient } from "../src/client.js";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { ActionResult, TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";

const client = createClient(StateService, process.argv[2] ?? "127.0.0.1:50051");
await client.createTask({ action: "quickstart_ts", initialStatus: TaskStatus.QUEUED });
// The oldest QUEUED quickstart_ts task (on a fresh server, the one just created), now RUNNING.
const { task } = await client.claimNextTask({ instanceId: "orch-1", actions: ["quickstart_ts"] }, { deadlineMs: 5000 });
const taskId = task!.taskId;

// The orchestrator's work: two result messages, then the task COMPLETE.
const work = (async () => {
  for (const node of ["n1", "n2"]) {
    await client.appendResultMessages({ taskId, messages: [{ message: `Deployed ${node}`, contextType: "node", context: node }] });
  }
  await client.updateTask({
    task: { taskId, status: TaskStatus.COMPLETE, result: { status: ActionResult.SUCCESS } },
    updateMask: { paths: ["status", "result.status"] },
  });
})();

// Watch it live: the stream ends once the task is finished; leaving the loop early cancels the call.
for await (const ev of client.watchTask({ taskId })) {
  if (ev.event.case === "message") {
    console.log(`#${ev.event.value.sequence} ${ev.event.value.message}`);
  } else if (ev.event.case === "task") {
    console.log("status", TaskStatus[ev.event.value.status]);
  }
}
await work;
client.close();
