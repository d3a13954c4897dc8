// Roles and the one authorization table: every StateService method names the
// least role that may call it. Roles are ordered; each includes the ones
// before it. The edge (src/server/auth.ts) checks the table once per call.
import { PermissionDeniedError } from "../core/errors.js";
import { ROLES, type Caller, type Role } from "../contract/caller.js";

// The roles and what a caller is: contract/caller.ts (handlers are given a Caller).
export { isRole, ROLES, type Caller, type Role } from "../contract/caller.js";

/**
 * StateService method name → least role. A method missing here is refused
 * for everyone (PERMISSION_DENIED), never allowed: test/auth.test.ts checks
 * that the table covers every method of the generated descriptor.
 */
export const METHOD_ROLES: Readonly<Record<string, Role>> = {
  GetTask: "reader",
  ListTasks: "reader",
  ListSubtasks: "reader",
  ListResultMessages: "reader",
  WatchTask: "reader",
  WatchTasks: "reader",
  ListBuildData: "reader",
  GetLeader: "reader",
  WatchLeader: "reader",
  CreateTask: "operator",
  TerminateTask: "operator",
  UpdateTask: "orchestrator",
  ClaimNextTask: "orchestrator",
  AppendResultMessages: "orchestrator",
  CreateBuildData: "orchestrator",
  ClaimLeadership: "orchestrator",
  RenewLeadership: "orchestrator",
  ResignLeadership: "orchestrator",
  GetDesignDocuments: "orchestrator",
  SetBootActionContext: "orchestrator",
  CreateBootActions: "orchestrator",
  GetBootActionContext: "reader",
  GetBootAction: "reader",
  ListBootActions: "reader",
  PurgeTasks: "admin",
  ExportState: "admin",
  ImportRecords: "admin",
};

/**
 * Methods nodes call: they hold no token, so these need no credentials and
 * no role; the handler authorises each call by the node identity key in its
 * request (rpc/bootActions.ts). Every StateService method is in exactly one
 * of this set and METHOD_ROLES (test/auth.test.ts).
 */
export const KEY_AUTHORIZED_METHODS: ReadonlySet<string> = new Set(["ReportBootActionStatus", "VerifyBootActionKey"]);

/** Every caller of a server without authentication: anonymous, allowed everything, as before authentication existed. */
export const OPEN_CALLER: Caller = Object.freeze({ subject: "", roles: ROLES, authenticated: false });

/** A caller of an open service (health) on a server with authentication: no roles. */
export const NOBODY: Caller = Object.freeze({ subject: "", roles: [], authenticated: false });

const rank = (r: Role) => ROLES.indexOf(r);

/** Whether the caller holds `role` or one that includes it. */
export function hasRole(c: Caller, role: Role): boolean {
  return c.roles.some((r) => rank(r) >= rank(role));
}

/** Throws PERMISSION_DENIED unless the caller may call `method` (a StateService method name, e.g. GetTask). */
export function authorize(c: Caller, method: string): void {
  const needed = Object.hasOwn(METHOD_ROLES, method) ? METHOD_ROLES[method] : undefined;
  if (needed === undefined) {
    throw new PermissionDeniedError("METHOD_NOT_IN_POLICY", `${method} is in no role of the server's authorization table, so nobody may call it`, {
      method,
    });
  }
  if (!hasRole(c, needed)) {
    throw new PermissionDeniedError("ROLE_REQUIRED", `${method} needs the role ${needed} (or one above it)`, { method, required_role: needed });
  }
}

/**
 * The identity a request may record (created_by, terminated_by): the
 * caller's subject when `claimed` is empty or names the caller; someone else
 * only for an admin. Unchecked without authentication.
 */
export function actingAs(c: Caller, field: string, claimed: string): string {
  if (!c.authenticated) return claimed;
  if (claimed === "" || claimed === c.subject) return c.subject;
  if (hasRole(c, "admin")) return claimed;
  throw new PermissionDeniedError("IDENTITY_MISMATCH", `${field} must be empty or the caller's own subject; only an admin may name someone else`, {
    field,
    subject: c.subject,
  });
}

/** Whether responses to this caller may carry the passwords of design references. */
export const seesSecrets = (c: Caller): boolean => hasRole(c, "admin");

/**
 * Leases belong to their holder: whose leadership terms the caller may renew,
 * resign or fence work with (store/leases.ts LeaseActor). null, any term,
 * without authentication (every caller is the same anonymous one, as before)
 * and for an admin; otherwise only the terms its own subject claimed.
 */
export const leaseActor = (c: Caller): string | null => (!c.authenticated || hasRole(c, "admin") ? null : c.subject);
