// The command tree of bin/statemgmt (commander): commands, arguments,
// options, their parsing and validation, and the help text with examples.
// Each action hands a job to the runner main.ts supplies, which connects,
// runs it and turns its result or failure into an exit code.
import { bootActionGet, bootActionsList } from "./bootActions.js";
import { registerExportImport } from "./exportImportCommands.js";
import { Command, InvalidArgumentError, Option } from "commander";
import type { TaskStatus } from "../../gen/drydock/statemgmt/v1/task_pb.js";
import { VERSION } from "../core/version.js";
import type { Connection, GlobalOptions } from "./connection.js";
import { CliError, EXIT } from "./exit.js";
import { buildDataGet, buildDataList, designFetch, health } from "./resources.js";
import { parseStatus, STATUS_NAMES, tasksCreate, tasksGet, tasksList, tasksTerminate } from "./tasks.js";
import { OUTPUT_MODES, type Output } from "./terminal.js";
import { leaderShow, leaderWatch, tasksWatch, tasksWatchAll } from "./watch.js";

export interface JobContext {
  conn: Connection;
  out: Output;
  /** Aborted by Ctrl-C (SIGINT). */
  signal: AbortSignal;
}

export type Job = (ctx: JobContext) => Promise<number>;
/** Runs a job with the global options of the command that chose it. */
export type Runner = (globals: GlobalOptions, job: Job) => Promise<void>;

export const DEFAULT_SERVER = "127.0.0.1:50051";

/** 500ms, 10s, 2m, 1h, or plain seconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw new InvalidArgumentError("expected a duration such as 500ms, 10s, 2m");
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms" | "s" | "m" | "h"];
  if (ms < 1 || ms > 86_400_000) throw new InvalidArgumentError("must be between 1ms and 24h");
  return Math.round(ms);
}

function positiveInt(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) < 1) throw new InvalidArgumentError("expected a positive whole number");
  return Number(s);
}

/** 30m, 2h, 7d (that long ago), or an ISO 8601 date or time such as 2026-12-01 or 2026-12-01T08:00:00Z. */
export function parseSince(s: string, now: number = Date.now()): Date {
  const m = /^(\d+)(s|m|h|d)$/.exec(s.trim());
  if (m) return new Date(now - Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s" | "m" | "h" | "d"]);
  const d = /^(\d{4}-\d\d-\d\d)(?:[T ](\d\d:\d\d(?::\d\d(?:\.\d+)?)?)(Z|[+-]\d\d:\d\d)?)?$/i.exec(s.trim());
  // A time without a zone is UTC, as every time the CLI prints.
  const t = d ? Date.parse(d[2] ? `${d[1]}T${d[2]}${d[3] ?? "Z"}` : d[1]!) : NaN;
  if (Number.isNaN(t)) throw new InvalidArgumentError("expected an age such as 30m, 2h, 7d, or a UTC date or time such as 2026-12-01 or 2026-12-01T08:00:00Z");
  return new Date(t);
}

function sequence(s: string): bigint {
  if (!/^\d{1,19}$/.test(s)) throw new InvalidArgumentError("expected a sequence number (0 or more)");
  return BigInt(s);
}

function statuses(s: string, prev: TaskStatus[] = []): TaskStatus[] {
  try {
    return [...prev, ...s.split(",").filter(Boolean).map(parseStatus)];
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

const repeatable = (s: string, prev: string[] = []): string[] => [...prev, ...s.split(",").filter(Boolean)];

const examples = (lines: string[]) => `\nExamples:\n${lines.map((l) => `  ${l}`).join("\n")}\n`;

const ROOT_HELP = `
Environment:
  STATEMGMT_SERVER   default of --server
  STATEMGMT_TOKEN    default of --token
  NO_COLOR           no colours and no live views (plain lines), as when stdout is not a terminal

Task ids: wherever a task id is taken (arguments, --parent, --task) a unique
prefix of it will do, such as the 8 characters tables show; a prefix is
resolved by reading every task's id, an ambiguous one lists the candidates
(exit 2). Give full ids in scripts: they skip that scan.

Output (-o): table (the default; colours and live views on a terminal), wide
(more columns), json (the server's protobuf JSON: one document, or one object
per line for watches).

Exit codes:
  ${EXIT.OK}    success; a watched task finished with SUCCESS
  ${EXIT.TASK_FAILED}    a watched task finished with FAILURE, PARTIAL_SUCCESS or no outcome; health not SERVING
  ${EXIT.USAGE}    bad usage: unknown command or option, bad value, unreadable file, INVALID_ARGUMENT
  ${EXIT.TASK_TERMINATED}    a watched task was TERMINATED
  ${EXIT.NOT_FOUND}    NOT_FOUND
  ${EXIT.CONFLICT}    ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED
  ${EXIT.UNAVAILABLE}    UNAVAILABLE (no server at --server), DEADLINE_EXCEEDED (see --timeout)
  ${EXIT.DENIED}    UNAUTHENTICATED, PERMISSION_DENIED
  ${EXIT.OTHER}    any other error
  ${EXIT.INTERRUPTED}  interrupted by Ctrl-C
${examples([
  "statemgmt tasks list --status running",
  "statemgmt tasks watch 1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d",
  "STATEMGMT_SERVER=statemgmt.example:50051 statemgmt --cacert ca.pem --token $TOKEN health",
])}`;

export function buildProgram(run: Runner): Command {
  const program = new Command("statemgmt")
    .description("Operate drydock-statemgmt: tasks, their live progress, leadership, build data, designs.")
    .version(VERSION, "-V, --version")
    .addOption(new Option("-s, --server <host:port>", "the server").env("STATEMGMT_SERVER").default(DEFAULT_SERVER))
    .addOption(new Option("--token <token>", "bearer token sent with every call").env("STATEMGMT_TOKEN"))
    .option("--tls", "use TLS with the system's CAs (implied by --cacert and --cert)")
    .option("--cacert <file>", "PEM CA to verify the server with (implies TLS)")
    .option("--cert <file>", "PEM client certificate for mutual TLS (with --key)")
    .option("--key <file>", "PEM private key of --cert")
    .addOption(new Option("--timeout <duration>", "deadline of each call (watches have none)").argParser(parseDuration).default(10_000, "10s"))
    .addOption(new Option("-o, --output <mode>", "output format").choices(OUTPUT_MODES).default("table"))
    .configureHelp({ showGlobalOptions: true })
    .showSuggestionAfterError(true)
    .exitOverride()
    .addHelpText("after", ROOT_HELP);

  /** The action of a leaf command: its arguments and options to a job. */
  const act =
    <A extends unknown[]>(job: (...a: [...A, Record<string, unknown>]) => Job) =>
    async (...args: unknown[]) => {
      const cmd = args[args.length - 1] as Command;
      const positional = args.slice(0, -2) as A;
      await run(cmd.optsWithGlobals() as unknown as GlobalOptions, job(...positional, cmd.opts()));
    };

  const tasks = program.command("tasks").description("list, inspect, create, terminate and watch tasks");

  tasks
    .command("list")
    .description("tasks oldest first (--newest: newest first), as a table: short id, action, status, result, created, age")
    .option("--status <status>", `only tasks in this status (${STATUS_NAMES.join(", ")}); repeatable or comma-separated`, statuses, [])
    .option("--action <action>", "only tasks with this action; repeatable or comma-separated", repeatable, [])
    .option("--parent <task-id>", "only direct subtasks of this task")
    .addOption(
      new Option("--since <when>", "only tasks created since then: an age (30m, 2h, 7d) or a UTC date or time (2026-12-01, 2026-12-01T08:00:00Z)").argParser(
        (v: string) => parseSince(v),
      ),
    )
    .option("--newest", "the newest tasks, newest first, instead of the oldest (reads every matching page: the server lists oldest first only)")
    .option("--limit <n>", "show at most n tasks (default 50)", positiveInt)
    .option("--all", "every matching task, however many (pages through them all)")
    .option("--page-size <n>", "tasks per call while paging (at most 1000)", positiveInt)
    .addHelpText(
      "after",
      `
When more tasks match than are shown, a note on stderr says so and how to see
them; stdout holds only the table or the JSON.
${examples(["statemgmt tasks list", "statemgmt tasks list --newest --limit 10", "statemgmt tasks list --since 2h --status queued,running --action deploy_nodes", "statemgmt tasks list --all -o json | jq -r '.[].taskId'"])}`,
    )
    .action(
      act<[]>((o) => ({ conn, out }) => {
        if (o.all && o.limit !== undefined) throw new CliError("--limit and --all do not go together", EXIT.USAGE);
        return tasksList(conn, out, {
          statuses: o.status as TaskStatus[],
          actions: o.action as string[],
          parent: o.parent as string | undefined,
          since: o.since as Date | undefined,
          newest: !!o.newest,
          limit: o.all ? undefined : ((o.limit as number | undefined) ?? 50),
          pageSize: o.pageSize as number | undefined,
        });
      }),
    );

  tasks
    .command("get")
    .description("one task: status, result, links; with --tree its subtasks, with --messages its result messages, with --errors its error messages")
    .argument("<task-id>", "the task's id, or a unique prefix of it (the 8 characters tables show)")
    .option("--messages", "also list every result message")
    .option("--errors", "also list the error messages only (the server's errors-only view)")
    .option("--tree", "also show the subtask tree with each subtask's status")
    .addHelpText(
      "after",
      examples([
        "statemgmt tasks get 1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d --tree",
        "statemgmt tasks get $ID --messages -o json | jq '.resultMessages | length'",
        "statemgmt tasks get 2ef18a66 --errors",
      ]),
    )
    .action(
      act<[string]>(
        (id, o) =>
          ({ conn, out }) =>
            tasksGet(conn, out, id, { messages: !!o.messages, errors: !!o.errors, tree: !!o.tree }),
      ),
    );

  tasks
    .command("create")
    .description("create a task (REQUESTED, or QUEUED with --queued)")
    .argument("<action>", "what to do, e.g. deploy_nodes")
    .option("--design-ref <uri>", "the site design (file, http(s), deckhand+http(s) URI)")
    .option("--node-filter <file>", 'a NodeFilter as JSON, e.g. {"filterSet":[{"nodeNames":["n1"]}]}')
    .option("--queued", "create it QUEUED, ready for an orchestrator to claim")
    .option("--parent <task-id>", "create it as a subtask of this task")
    .option("--id <uuid>", "choose its id, so that a retry cannot create it twice (ALREADY_EXISTS)")
    .addHelpText(
      "after",
      examples([
        "statemgmt tasks create deploy_nodes --queued --design-ref deckhand+https://deckhand:9000/api/v1.0/revisions/7/rendered-documents",
        "ID=$(statemgmt tasks create prepare_nodes --node-filter nodes.json -o json | jq -r .taskId)",
      ]),
    )
    .action(
      act<[string]>(
        (action, o) =>
          ({ conn, out }) =>
            tasksCreate(conn, out, action, {
              designRef: o.designRef as string | undefined,
              nodeFilter: o.nodeFilter as string | undefined,
              queued: !!o.queued,
              parent: o.parent as string | undefined,
              id: o.id as string | undefined,
            }),
      ),
    );

  tasks
    .command("terminate")
    .description("ask for a task to be terminated (idempotent)")
    .argument("<task-id>", "the task's id, or a unique prefix of it (the 8 characters tables show)")
    .addHelpText("after", examples(["statemgmt tasks terminate 1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d"]))
    .action(
      act<[string]>(
        (id) =>
          ({ conn, out }) =>
            tasksTerminate(conn, out, id),
      ),
    );

  tasks
    .command("watch")
    .description("follow a task live until it finishes (exit code 0 SUCCESS, 1 FAILURE or PARTIAL_SUCCESS, 3 TERMINATED)")
    .argument("<task-id>", "the task's id, or a unique prefix of it (the 8 characters tables show)")
    .addOption(
      new Option("--after-sequence <n>", "only messages after this sequence (resume where an earlier watch stopped)").argParser(sequence).default(0n, "0"),
    )
    .addHelpText(
      "after",
      `
On a terminal: a header redrawn in place (action, status, result, elapsed
time, id, a progress bar of the finished direct subtasks, message and error
counts) above the newest messages that fit the screen. Not on a terminal, with
NO_COLOR or with -o json: one line (or JSON object) per event, no escape codes;
notes such as reconnects go to stderr. After a dropped connection or a full
server buffer the watch reconnects by itself and resumes after the last message
it printed: none is shown twice or missed. It ends when the task finishes.

Exit codes: 0 SUCCESS, 1 FAILURE, PARTIAL_SUCCESS or no outcome, 3 TERMINATED,
130 Ctrl-C (the task goes on), or the error's code (4 NOT_FOUND, ...).
${examples([
  "statemgmt tasks watch 1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d",
  "statemgmt tasks watch $ID --after-sequence 42 | tee deploy.log",
  "statemgmt tasks watch $ID -o json | jq -r 'select(.message) | .message.message'",
])}`,
    )
    .action(
      act<[string]>(
        (id, o) =>
          ({ conn, out, signal }) =>
            tasksWatch(conn, out, id, o.afterSequence as bigint, signal),
      ),
    );

  tasks
    .command("watch-all")
    .description("a live table of the matching tasks, updated as they change (Ctrl-C to stop); elsewhere one line per change")
    .option("--status <status>", "only tasks in this status; repeatable or comma-separated", statuses, [])
    .option("--action <action>", "only tasks with this action; repeatable or comma-separated", repeatable, [])
    .option("--parent <task-id>", "only direct subtasks of this task")
    .addHelpText("after", examples(["statemgmt tasks watch-all --status queued,running", "statemgmt tasks watch-all --parent $ID -o wide"]))
    .action(
      act<[]>(
        (o) =>
          ({ conn, out, signal }) =>
            tasksWatchAll(conn, out, { statuses: o.status as TaskStatus[], actions: o.action as string[], parent: o.parent as string | undefined }, signal),
      ),
    );

  program
    .command("leader")
    .description("the current leader of an election; with --watch every change as it happens")
    .option("--election <name>", "the election", "orchestrator")
    .option("--watch", "keep printing each new term, resignation and expiry (Ctrl-C to stop)")
    .addHelpText("after", examples(["statemgmt leader", "statemgmt leader --election orchestrator --watch"]))
    .action(
      act<[]>(
        (o) =>
          ({ conn, out, signal }) =>
            o.watch ? leaderWatch(conn, out, o.election as string, signal) : leaderShow(conn, out, o.election as string),
      ),
    );

  const builddata = program.command("builddata").description("build data records of nodes (hardware inventory, logs, …)");

  builddata
    .command("list")
    .description("records newest first: id, node, generator, format, collected, task (give --node, --task or both)")
    .option("--node <name>", "only records of this node")
    .option("--task <task-id>", "only records collected by this task")
    .option("--latest", "only the newest record of each generator")
    .option("--limit <n>", "show at most n records", positiveInt)
    .addHelpText("after", examples(["statemgmt builddata list --node n1 --latest", "statemgmt builddata list --task $ID -o json"]))
    .action(
      act<[]>(
        (o) =>
          ({ conn, out }) =>
            buildDataList(conn, out, {
              node: o.node as string | undefined,
              task: o.task as string | undefined,
              latest: !!o.latest,
              limit: o.limit as number | undefined,
            }),
      ),
    );

  builddata
    .command("get")
    .description("the data of the newest matching record (or --id), to stdout or -f FILE")
    .option("--node <name>", "a record of this node")
    .option("--task <task-id>", "a record collected by this task")
    .option("--generator <name>", "a record of this generator, e.g. lshw")
    .option("--id <n>", "the record with this id (from builddata list)", (s: string) => BigInt(positiveInt(s)))
    .option("-f, --file <file>", "write the data to this file instead of stdout")
    .addHelpText(
      "after",
      examples(["statemgmt builddata get --node n1 --generator lshw > n1-lshw.xml", "statemgmt builddata get --node n1 --id 42 -f record.bin"]),
    )
    .action(
      act<[]>(
        (o) =>
          ({ conn, out }) =>
            buildDataGet(conn, out, {
              node: o.node as string | undefined,
              task: o.task as string | undefined,
              generator: o.generator as string | undefined,
              id: o.id as bigint | undefined,
              file: o.file as string | undefined,
            }),
      ),
    );

  const bootactions = program.command("bootactions").description("nodes' boot actions and the status their nodes reported");

  bootactions
    .command("list")
    .description("boot actions in creation order: id, node, name, status, created, reported, task (give --node, --task or both)")
    .option("--node <name>", "only actions of this node (every deployment)")
    .option("--task <task-id>", "only actions of this deployment task")
    .addHelpText("after", examples(["statemgmt bootactions list --node n1", "statemgmt bootactions list --task $ID -o json"]))
    .action(
      act<[]>(
        (o) =>
          ({ conn, out }) =>
            bootActionsList(conn, out, { node: o.node as string | undefined, task: o.task as string | undefined }),
      ),
    );

  bootactions
    .command("get")
    .description("one boot action by its ULID")
    .argument("<action-id>", "the action's ULID (26 characters)")
    .addHelpText("after", examples(["statemgmt bootactions get 01J9ZQ3V5W8X2Y4Z6A7B8C9D0E"]))
    .action(
      act<[string]>(
        (id) =>
          ({ conn, out }) =>
            bootActionGet(conn, out, id),
      ),
    );

  const design = program.command("design").description("site designs, fetched by the server");
  design
    .command("fetch")
    .description("fetch a design through the server (as tasks name it), to stdout or -f FILE")
    .argument("<design-ref>", "file://, http(s):// or deckhand+http(s):// reference")
    .option("-f, --file <file>", "write the design to this file instead of stdout")
    .addHelpText("after", examples(["statemgmt design fetch deckhand+https://deckhand:9000/api/v1.0/revisions/7/rendered-documents -f site.yaml"]))
    .action(
      act<[string]>(
        (ref, o) =>
          ({ conn, out }) =>
            designFetch(conn, out, ref, o.file as string | undefined),
      ),
    );

  program
    .command("health")
    .description("the server's health (SERVING only while its database answers); exit code 1 when not SERVING")
    .addHelpText("after", examples(["statemgmt health", "statemgmt --server 10.0.0.5:50051 --cacert ca.pem health"]))
    .action(
      act<[]>(
        () =>
          ({ conn, out }) =>
            health(conn, out),
      ),
    );

  registerExportImport(program, act);

  return program;
}
