// All SQL of the service_secrets table.
import type { Sql } from "../db/connect.js";
import { run } from "./sql.js";

/** A secret the migrations created; throws when it is missing (a schema older than this build). */
export async function secretsGet(sql: Sql, p: { name: string; signal?: AbortSignal }): Promise<Buffer> {
  const [row] = await run(sql, p.signal, "secrets.get", sql<{ secret: Buffer }[]>`select secret from service_secrets where name = ${p.name}`);
  if (!row) throw new Error(`service secret ${p.name} is missing: apply the migrations of this build`);
  return row.secret;
}
