import { expect } from "chai";
import { connect, type Sql } from "../src/db/connect.js";
import { parseTimestamptz } from "../src/core/time.js";
import { createTestDatabase } from "./harness.js";

// timestamptz text as PostgreSQL itself writes it, parsed back to the exact
// microsecond: the fast path (UTC, years 1000–9999) and the general one.
describe("timestamptz parsing", () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db.drop();
  });

  for (const timeZone of ["UTC", "Pacific/Chatham", "America/St_Johns"]) {
    it(`reads 5,000 values exactly in session TimeZone ${timeZone}`, async () => {
      const sql: Sql = connect({ url: db.url, max: 1, timeZone });
      try {
        // Random instants from year 1 to 9999, with 0–6 significant fraction
        // digits (PostgreSQL drops trailing zeros), plus edge cases.
        const rows = await sql<{ us: string; text: string }[]>`
          with v(us) as (
            select s * 1000000 + floor(random() * 1000000)::bigint / p * p
            from (select floor(random() * 315537897599)::bigint - 62135596800 as s,
                         (10 ^ floor(random() * 7))::bigint as p
                  from generate_series(1, 5000)) x
            union all values (0::bigint), (-62135596800000000), (253402300799999999), (-1), (1), (946684800000001)
          )
          select us::text as us,
                 (timestamptz 'epoch' + (us / 1000000) * interval '1 second' + (us % 1000000) * interval '1 microsecond')::text as text
          from v`;
        expect(rows.length).to.be.greaterThan(5000);
        const wrong = rows.filter((r) => parseTimestamptz(r.text) !== BigInt(r.us));
        expect(wrong.slice(0, 5)).to.deep.equal([]);
      } finally {
        await sql.end();
      }
    });
  }
});
