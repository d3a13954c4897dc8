// Small helpers of tasks and their messages that several test files share.
import type { TaskStatus } from "../../gen/drydock/statemgmt/v1/task_pb.js";
import type { StateClient } from "../harness.js";

/** The sequences from..to (both included), as watch streams and pages carry them. */
export const range = (from: number, to: number): bigint[] => Array.from({ length: to - from + 1 }, (_, i) => BigInt(from + i));

/** Sets a task's status through UpdateTask (a field mask of status alone). */
export async function setStatus(c: StateClient, taskId: string, status: TaskStatus, opts: { deadlineMs?: number } = {}): Promise<void> {
  await c.updateTask({ task: { taskId, status }, updateMask: { paths: ["status"] } }, opts);
}
