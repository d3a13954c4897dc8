// WatchTask and WatchTasks: validate, iterate the hub's stream, convert.
import type { TaskStatus } from "../core/domain.js";
import { seesSecrets } from "../auth/roles.js";
import type { WatchHub } from "../watch/hub.js";
import { messageEventToPb, taskToPb } from "./convert.js";
import { statusList, type StateImpl } from "./tasks.js";
import { LIMITS, Validator } from "./validate.js";

export function watchRpcs(hub: WatchHub): StateImpl {
  return {
    watchTask(req, ctx) {
      const v = new Validator();
      const taskId = v.uuid("task_id", req.taskId, true);
      if (req.afterSequence < 0n) v.add("after_sequence", "must not be negative");
      v.check();
      const secrets = seesSecrets(ctx.caller);
      return hub
        .taskEvents(ctx, taskId, req.afterSequence)
        .map((event) => (event.kind === "message" ? messageEventToPb(event.message) : { event: { case: "task", value: taskToPb(event.task, secrets) } }));
    },

    async *watchTasks(req, ctx) {
      const v = new Validator();
      const statuses: TaskStatus[] = statusList(v, "statuses", req.statuses);
      if (req.actions.length > LIMITS.listFilterValues) v.add("actions", `at most ${LIMITS.listFilterValues} actions`);
      req.actions.forEach((action, i) => v.action(`actions[${i}]`, action));
      const parent = v.uuid("parent_task_id", req.parentTaskId, false);
      v.check();
      const secrets = seesSecrets(ctx.caller);
      const filter = { statuses, actions: req.actions, parentTaskId: parent === "" ? null : parent };
      for await (const { task, initial } of hub.changedTasks(ctx, filter, req.sendInitial)) {
        yield { task: taskToPb(task, secrets), initial };
      }
    },
  };
}
