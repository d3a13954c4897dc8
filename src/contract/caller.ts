// Who is calling, as the edge hands it to every handler (contract.ts
// CallContext.caller): a subject and its roles. The roles are ordered; each
// includes the ones before it. Which role each method needs: auth/roles.ts.

export const ROLES = ["reader", "operator", "orchestrator", "admin"] as const;
export type Role = (typeof ROLES)[number];

export const isRole = (s: string): s is Role => (ROLES as readonly string[]).includes(s);

/** Who is calling. */
export interface Caller {
  /** The authenticated subject (token file entry, certificate subject, Keystone user); "" when anonymous. */
  subject: string;
  roles: readonly Role[];
  /** False when the server runs without authentication (or for a service that is always open). */
  authenticated: boolean;
}
