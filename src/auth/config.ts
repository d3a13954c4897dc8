// What authentication the server runs with (config.ts reads it from flags and
// environment; server/auth.ts builds the guard from it).
import type { KeystoneAuthOptions } from "./keystone.js";

/** Authentication of callers; with neither tokensFile nor keystone, every caller may do everything. */
export interface AuthConfig {
  /** The bearer token file (absolute path), re-read when it changes. */
  tokensFile: string | undefined;
  /** Keystone token validation (STATEMGMT_AUTH_KEYSTONE=1). */
  keystone: KeystoneAuthOptions | undefined;
  /** Whether server reflection needs authentication (health never does). */
  reflection: "open" | "authenticated";
}

export const NO_AUTH: AuthConfig = { tokensFile: undefined, keystone: undefined, reflection: "open" };
