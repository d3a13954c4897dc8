// deckhand+http:// and deckhand+https:// references: the same request over
// http(s) with the "deckhand+" prefix removed and an X-Auth-Token header from
// a token provider: a fixed token (staticToken) or Keystone's (keystone/).
// A 401 invalidates the token and is retried once.
import { PermissionDeniedError } from "../core/errors.js";
import type { HttpClient } from "../http/client.js";
import type { TokenProvider } from "../keystone/tokens.js";
import type { DesignDriver } from "./driver.js";
import { readDocument } from "./http.js";

export function deckhandDriver(client: HttpClient, tokens: TokenProvider | undefined): DesignDriver {
  return {
    async fetch(url, redacted, ctx) {
      if (!tokens) {
        throw new PermissionDeniedError(
          "DECKHAND_NOT_CONFIGURED",
          "deckhand references need credentials: set STATEMGMT_DECKHAND_TOKEN, or STATEMGMT_KEYSTONE_URL with its user, password and project",
          { design_ref: redacted },
        );
      }
      const target = new URL(url.href.replace(/^deckhand\+/i, ""));
      for (let attempt = 0; ; attempt++) {
        const token = await tokens.token(ctx);
        const out = await client.get(target, redacted, { "x-auth-token": token }, ctx, async (res) => {
          if (res.status === 401 && attempt === 0) {
            await res.body.dump();
            tokens.invalidate(token);
            return undefined; // fetch a new token, try once more
          }
          return readDocument(res, redacted, ctx);
        });
        if (out) return out;
      }
    },
  };
}

/** A fixed token from configuration. */
export function staticToken(token: string): TokenProvider {
  return { token: async () => token, invalidate: () => {} };
}
