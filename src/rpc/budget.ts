// The byte budget of responses: list pages stop adding rows at it (at least
// one row, then next_page_token), and GetTask FULL refuses a response past it
// with FAILED_PRECONDITION RESPONSE_TOO_LARGE, measured in the database before
// anything is read. Sizes are estimates of the encoded response: the rows'
// text and JSON (as text) and binary columns, plus a fixed allowance per row.
import { FailedPreconditionError } from "../core/errors.js";

/** STATEMGMT_RESPONSE_MAX_BYTES's default. */
export const DEFAULT_RESPONSE_MAX_BYTES = 4 * 1024 * 1024;

// One estimate of a task's bytes for both budgets, computed once per task object: watch/budget.ts.
export { taskBytes } from "../watch/budget.js";

/** FAILED_PRECONDITION RESPONSE_TOO_LARGE: `size` (at least) estimated bytes against `limit`. */
export function responseTooLarge(what: string, limit: number, size: number, advice: string, metadata: Record<string, string> = {}): FailedPreconditionError {
  return new FailedPreconditionError(
    "RESPONSE_TOO_LARGE",
    `${what} would be at least ${size} bytes, more than a response may hold (${limit} bytes, STATEMGMT_RESPONSE_MAX_BYTES); ${advice}`,
    { ...metadata, limit: String(limit), size: String(size) },
  );
}
