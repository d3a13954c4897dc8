// Result message RPCs: AppendResultMessages, ListResultMessages.
import type { Sql } from "../db/connect.js";
import type { NewResultMessage } from "../core/domain.js";
import { NotFoundError } from "../core/errors.js";
import * as messages from "../store/messages.js";
import { tasksExists } from "../store/tasks.js";
import type { Writers } from "../store/writers.js";
import { newMessagePb, microsFromTimestamp } from "./convert.js";
import { filterFingerprint, type PageTokens } from "./pagination.js";
import { NO_COUNTERS, type ServiceCounters } from "../metrics/callCounters.js";
import type { StateImpl } from "./tasks.js";
import { Validator } from "./validate.js";
import type { RpcSettings } from "./settings.js";

export const MESSAGE_LIMITS = { message: 1024, contextType: 64, context: 256, extraBytes: 64 * 1024, perAppend: 1000 } as const;

export function messageRpcs(
  sql: Sql,
  tokens: PageTokens,
  writers: Writers,
  settings: Pick<RpcSettings, "responseMaxBytes">,
  counters: ServiceCounters = NO_COUNTERS,
): StateImpl {
  const { responseMaxBytes } = settings;
  return {
    async appendResultMessages(req, ctx) {
      const { signal } = ctx;
      const v = new Validator();
      const taskId = v.uuid("task_id", req.taskId, true);
      if (req.messages.length === 0) v.add("messages", "at least one message is required");
      if (req.messages.length > MESSAGE_LIMITS.perAppend) {
        v.add("messages", `has ${req.messages.length} entries; the maximum is ${MESSAGE_LIMITS.perAppend} per call`);
      } else {
        req.messages.forEach((m, i) => {
          const f = `messages[${i}]`;
          v.text(`${f}.message`, m.message, MESSAGE_LIMITS.message, true)
            .text(`${f}.context_type`, m.contextType, MESSAGE_LIMITS.contextType)
            .text(`${f}.context`, m.context, MESSAGE_LIMITS.context)
            .timestamp(`${f}.ts`, m.ts)
            .jsonObject(`${f}.extra`, m.extra, MESSAGE_LIMITS.extraBytes);
        });
      }
      if (req.firstSequence < 0n) v.add("first_sequence", "must not be negative (0: any)");
      v.check();
      ctx.logFields.taskId = taskId;
      const list: NewResultMessage[] = req.messages.map((m) => ({
        message: m.message,
        error: m.error,
        contextType: m.contextType,
        context: m.context,
        ts: m.ts ? microsFromTimestamp(m.ts) : null,
        extra: m.extra ?? null,
      }));
      const res = await writers.appendMessages({ taskId, messages: list, firstSequence: req.firstSequence, signal });
      counters.messagesAppended(res.sequences.length);
      return { sequences: res.sequences, taskVersion: res.taskVersion, errorCount: res.errorCount };
    },

    async listResultMessages(req, { signal }) {
      const v = new Validator();
      const taskId = v.uuid("task_id", req.taskId, true);
      const limit = v.pageSize("page_size", req.pageSize, 100, 1000);
      if (req.afterSequence < 0n) v.add("after_sequence", "must not be negative");
      v.check();
      const fingerprint = filterFingerprint({ taskId, errorsOnly: req.errorsOnly, after: req.afterSequence });
      const key = tokens.decode("page_token", req.pageToken, fingerprint, ["int64"]);
      const after = key ? BigInt(key[0]!) : req.afterSequence;
      // At most `limit` messages and the response's byte budget (at least one message): the page shrinks to fit.
      const page = await messages.messagesPage(sql, { taskId, afterSequence: after, errorsOnly: req.errorsOnly, limit, maxBytes: responseMaxBytes, signal });
      const rows = page.messages;
      if (rows.length === 0 && !(await tasksExists(sql, { taskId, signal }))) throw new NotFoundError("Task", taskId);
      const last = rows[rows.length - 1];
      return {
        messages: rows.map(newMessagePb),
        nextPageToken: page.more && last ? tokens.encode(fingerprint, [last.sequence.toString()]) : "",
      };
    },
  };
}
