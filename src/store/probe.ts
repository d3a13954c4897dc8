// The health probe's query: can this pool's database take writes?
import type { Sql } from "../db/connect.js";

/**
 * True when the probe's own (implicit) transaction may write; false on a
 * standby in recovery or under default_transaction_read_only. Takes no
 * signal: a cancel request names a pool connection, and could reach another
 * call's query if this one had just finished, so callers bound the wait
 * instead and leave the query to settle.
 */
export async function probeWritable(sql: Sql): Promise<boolean> {
  const [row] = await sql<{ ro: string }[]>`select current_setting('transaction_read_only') as ro`;
  return row?.ro === "off";
}
