// The export, import and import-drydock commands of bin/statemgmt
// (registered by program.ts).
import { Option, type Command } from "commander";
import { importDrydock } from "./drydock.js";
import { exportState, importFile } from "./exportImport.js";
import type { Job } from "./program.js";

type Act = <A extends unknown[]>(job: (...a: [...A, Record<string, unknown>]) => Job) => (...args: unknown[]) => Promise<void>;

const examples = (lines: string[]) => `\nExamples:\n${lines.map((l) => `  ${l}`).join("\n")}\n`;

export function registerExportImport(program: Command, act: Act): void {
  program
    .command("export")
    .description("the whole state (tasks, result messages, build data, boot actions) as one consistent snapshot, to stdout or -f FILE (admin)")
    .option("-f, --file <file>", "write the export to this file (created whole or not at all) instead of stdout")
    .option("--include-secrets", "also export the hashes of nodes' identity keys (the file is created mode 0600)")
    .addHelpText(
      "after",
      `
The format is NDJSON (docs/migration.md "Export format"): a header line, one JSON object
per record, and a trailer with the count of each kind, so that a truncated
file is refused by import. The server reads everything in one REPEATABLE READ
transaction: the file is a snapshot of one instant. A progress line is shown on
stderr when it is a terminal. (-f, not --output: -o/--output is the global
output mode.)
${examples(["statemgmt export -f statemgmt-$(date +%F).ndjson", "statemgmt --server statemgmt.example:50051 --cacert ca.pem --token $ADMIN_TOKEN export --include-secrets -f backup.ndjson", "statemgmt export | gzip > backup.ndjson.gz"])}`,
    )
    .action(
      act<[]>(
        (o) =>
          ({ conn, out, signal }) =>
            exportState(conn, out, { file: o.file as string | undefined, includeSecrets: !!o.includeSecrets }, signal),
      ),
    );

  program
    .command("import")
    .description("write an export file back (admin): each record added, skipped (already stored, identical) or refused")
    .argument("<file>", "an export file (statemgmt export)")
    .addHelpText(
      "after",
      `
The whole file is checked first (header, every record, the trailer's counts):
a truncated or corrupt file is refused naming the wrong line, and nothing is
written. Then records go to the server in batches, each written in one
transaction. Importing a file twice stores everything once. A refused record
(it contradicts what is stored) is reported with its line; exit code 5 when
any was refused.
${examples(["statemgmt import backup.ndjson", "statemgmt import backup.ndjson -o json | jq .counts"])}`,
    )
    .action(
      act<[string]>(
        (file) =>
          ({ conn, out, signal }) =>
            importFile(conn, out, file, signal),
      ),
    );

  program
    .command("import-drydock")
    .description("bring over everything in Drydock's own statemgmt database (admin), through the same path as import")
    .addOption(
      new Option("--database-url <url>", "Drydock's database, e.g. postgresql://drydock:PASSWORD@db:5432/drydock")
        .env("DRYDOCK_DATABASE_URL")
        .makeOptionMandatory(),
    )
    .option("--include-secrets", "also bring over nodes' identity keys (as their hashes), so nodes keep reporting with the keys they hold")
    .option("--dry-run", "read and convert everything, print counts and the first problems; write nothing")
    .addHelpText(
      "after",
      `
The CLI reads Drydock's database itself (in one read-only REPEATABLE READ
transaction) and sends the records to the server; the server needs no access
to it. Rows Drydock left inconsistent (a subtask list naming a missing task,
a message of a deleted task) are reported and skipped. See docs/migration.md
"Migrating from Drydock's statemgmt".
${examples(["statemgmt import-drydock --database-url postgresql://drydock@db/drydock --dry-run", "DRYDOCK_DATABASE_URL=postgresql://drydock:$PW@db/drydock statemgmt import-drydock --include-secrets"])}`,
    )
    .action(
      act<[]>(
        (o) =>
          ({ conn, out, signal }) =>
            importDrydock(conn, out, { databaseUrl: o.databaseUrl as string, includeSecrets: !!o.includeSecrets, dryRun: !!o.dryRun }, signal),
      ),
    );
}
