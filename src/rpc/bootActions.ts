// Boot action RPCs: a node's deployment context and identity key, its boot
// actions, and the reports nodes send about them (authorised by the node's
// identity key alone; see auth/roles.ts KEY_AUTHORIZED_METHODS).
import { monotonicFactory } from "ulid";
import { BootActionStatus as PbBootActionStatus } from "../../gen/drydock/statemgmt/v1/boot_action_pb.js";
import { generateIdentityKey, IDENTITY_KEY_BYTES, identityKeyHash } from "../auth/identityKey.js";
import { UnauthenticatedError } from "../core/errors.js";
import * as store from "../store/bootActions.js";
import type { Db } from "../store/transactions.js";
import { bootActionContextToPb, bootActionToPb } from "./convert.js";
import { MESSAGE_LIMITS } from "./messages.js";
import { filterFingerprint, type PageTokens } from "./pagination.js";
import type { StateImpl } from "./tasks.js";
import type { RpcSettings } from "./settings.js";
import { Validator } from "./validate.js";

export const BOOT_ACTION_LIMITS = { nodeName: 280, actionName: 256, actionsPerCall: 1000, detailsPerReport: 1000 } as const;

const keyRequired = () =>
  new UnauthenticatedError("IDENTITY_KEY_REQUIRED", "identity_key is required: the node proves who it is with the key of its boot action context");

export function bootActionRpcs(db: Db, tokens: PageTokens, settings: Pick<RpcSettings, "bootActionReportLimits">): StateImpl {
  const { sql } = db;
  const limits = settings.bootActionReportLimits;
  // Increasing within this process even for ids made in the same millisecond.
  const newActionId = monotonicFactory();
  return {
    async setBootActionContext(req, ctx) {
      const v = new Validator();
      v.text("node_name", req.nodeName, BOOT_ACTION_LIMITS.nodeName, true);
      const taskId = v.uuid("task_id", req.taskId, true);
      if (req.identityKey.length !== 0 && req.identityKey.length !== IDENTITY_KEY_BYTES) {
        v.add("identity_key", `is ${req.identityKey.length} bytes; it must be ${IDENTITY_KEY_BYTES} (or empty for the server to generate one)`);
      }
      v.check();
      ctx.logFields.taskId = taskId;
      ctx.logFields.nodeName = req.nodeName;
      const generated = req.identityKey.length === 0 ? generateIdentityKey() : null;
      const context = await store.bootActionContextSet(sql, {
        nodeName: req.nodeName,
        taskId,
        keyHash: identityKeyHash(generated ?? req.identityKey),
        signal: ctx.signal,
      });
      return { context: bootActionContextToPb(context), generatedIdentityKey: generated ?? new Uint8Array(0) };
    },

    async getBootActionContext(req, { signal }) {
      const v = new Validator();
      v.text("node_name", req.nodeName, BOOT_ACTION_LIMITS.nodeName, true);
      v.check();
      return { context: bootActionContextToPb(await store.bootActionContextGet(sql, { nodeName: req.nodeName, signal })) };
    },

    async createBootActions(req, ctx) {
      const v = new Validator();
      v.text("node_name", req.nodeName, BOOT_ACTION_LIMITS.nodeName, true);
      const taskId = v.uuid("task_id", req.taskId, true);
      if (req.actions.length === 0) v.add("actions", "at least one action is required");
      if (req.actions.length > BOOT_ACTION_LIMITS.actionsPerCall) {
        v.add("actions", `has ${req.actions.length} entries; the maximum is ${BOOT_ACTION_LIMITS.actionsPerCall} per call`);
      } else {
        const seen = new Map<string, number>();
        const seenIds = new Map<string, number>();
        req.actions.forEach((a, i) => {
          v.text(`actions[${i}].action_name`, a.actionName, BOOT_ACTION_LIMITS.actionName, true);
          const first = seen.get(a.actionName);
          if (first !== undefined)
            v.add(
              `actions[${i}].action_name`,
              `repeats actions[${first}].action_name ${JSON.stringify(a.actionName.slice(0, 64))}: names are unique per node and task`,
            );
          else seen.set(a.actionName, i);
          if (a.actionId !== undefined) {
            // Set but empty is a client's mistake, not a request for a generated id.
            if (a.actionId === "") v.add(`actions[${i}].action_id`, "is empty: leave it unset for the server to generate one");
            const id = v.ulid(`actions[${i}].action_id`, a.actionId, false);
            const firstId = seenIds.get(id);
            if (id !== "" && firstId !== undefined) v.add(`actions[${i}].action_id`, `repeats actions[${firstId}].action_id ${id}`);
            else if (id !== "") seenIds.set(id, i);
          }
        });
      }
      v.check();
      ctx.logFields.taskId = taskId;
      ctx.logFields.nodeName = req.nodeName;
      const created = await store.bootActionsCreate(sql, {
        nodeName: req.nodeName,
        taskId,
        actions: req.actions.map((a) => ({ actionId: a.actionId?.toUpperCase() || newActionId(), actionName: a.actionName, signalling: a.signalling })),
        signal: ctx.signal,
      });
      return { bootActions: created.map(bootActionToPb) };
    },

    async reportBootActionStatus(req, ctx) {
      const v = new Validator();
      const actionId = v.ulid("action_id", req.actionId, true);
      let status: "success" | "failure" | null = null;
      if (req.status === PbBootActionStatus.SUCCESS) status = "success";
      else if (req.status === PbBootActionStatus.FAILURE) status = "failure";
      else if (req.status !== PbBootActionStatus.UNSPECIFIED) {
        v.add("status", `must be SUCCESS, FAILURE, or unspecified to report details only (not ${PbBootActionStatus[req.status] ?? req.status})`);
      }
      if (req.details.length > BOOT_ACTION_LIMITS.detailsPerReport) {
        v.add("details", `has ${req.details.length} entries; the maximum is ${BOOT_ACTION_LIMITS.detailsPerReport} per report`);
      } else {
        req.details.forEach((d, i) => {
          v.text(`details[${i}].message`, d.message, MESSAGE_LIMITS.message, true).jsonObject(`details[${i}].extra`, d.extra, MESSAGE_LIMITS.extraBytes);
        });
      }
      if (req.status === PbBootActionStatus.UNSPECIFIED && req.details.length === 0) {
        v.add("details", "at least one detail is required when no status is reported");
      }
      v.check();
      if (req.identityKey.length === 0) throw keyRequired();
      ctx.logFields.actionId = actionId;
      const report = await store.bootActionReport(
        db.tx,
        ctx,
        {
          actionId,
          identityKey: req.identityKey,
          status,
          details: req.details.map((d) => ({ message: d.message, error: d.error, extra: d.extra ?? null })),
        },
        limits,
      );
      ctx.logFields.taskId = report.bootAction.taskId;
      return { bootAction: bootActionToPb(report.bootAction), sequences: report.sequences };
    },

    async verifyBootActionKey(req, { signal }) {
      const v = new Validator();
      v.text("node_name", req.nodeName, BOOT_ACTION_LIMITS.nodeName, true);
      v.check();
      if (req.identityKey.length === 0) throw keyRequired();
      const context = await store.bootActionContextVerify(sql, { nodeName: req.nodeName, identityKey: req.identityKey, signal });
      return { context: bootActionContextToPb(context) };
    },

    async getBootAction(req, { signal }) {
      const v = new Validator();
      const actionId = v.ulid("action_id", req.actionId, true);
      v.check();
      return { bootAction: bootActionToPb(await store.bootActionGet(sql, { actionId, signal })) };
    },

    async listBootActions(req, { signal }) {
      const v = new Validator();
      if (req.nodeName !== "") v.text("node_name", req.nodeName, BOOT_ACTION_LIMITS.nodeName);
      const taskId = v.uuid("task_id", req.taskId, false);
      const limit = v.pageSize("page_size", req.pageSize, 100, 1000);
      v.check();
      const filters = { nodeName: req.nodeName === "" ? null : req.nodeName, taskId: taskId === "" ? null : taskId };
      const fingerprint = filterFingerprint(filters);
      const key = tokens.decode("page_token", req.pageToken, fingerprint, ["ulid"]);
      const rows = await store.bootActionsList(sql, { ...filters, afterActionId: key ? key[0]! : null, limit: limit + 1, signal });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return {
        bootActions: page.map(bootActionToPb),
        nextPageToken: rows.length > limit && last ? tokens.encode(fingerprint, [last.actionId]) : "",
      };
    },
  };
}
