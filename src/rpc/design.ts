// GetDesignDocuments.
import type { DesignFetcher } from "../design/fetcher.js";
import { timestampFromMicros } from "./convert.js";
import type { StateImpl } from "./tasks.js";
import { LIMITS, Validator } from "./validate.js";

export function designRpcs(fetcher: DesignFetcher): StateImpl {
  return {
    async getDesignDocuments(req, { signal, deadline }) {
      const v = new Validator();
      v.text("design_ref", req.designRef, LIMITS.designRef, true);
      v.check();
      const d = await fetcher.fetch(req.designRef, signal, deadline);
      return {
        content: d.content,
        contentType: d.contentType,
        size: BigInt(d.content.length),
        sha256: d.sha256,
        designRef: d.redacted,
        fetchedAt: timestampFromMicros(BigInt(d.fetchedAt) * 1000n),
        fromCache: d.fromCache,
      };
    },
  };
}
