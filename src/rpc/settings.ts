// The settings StateService's handlers read: a slice of the server's
// settings (server/settings.ts extends it), passed whole by server.ts. Each
// handler factory names the fields it needs; the defaults are the server's.
import type { BootActionReportLimits } from "../store/bootActions.js";

export interface RpcSettings {
  /** Estimated bytes of one response: list pages stop at it, GetTask FULL refuses past it. */
  responseMaxBytes: number;
  /** Largest build data element accepted. */
  buildDataMaxBytes: number;
  /** What the reports on one boot action may store in all. */
  bootActionReportLimits: BootActionReportLimits;
}
