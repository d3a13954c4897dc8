// README's blocks and those of docs/ it links to, run as written against a real
// server (issue 24, items 9-12; moved to docs/ in issue 26):
//
// - the grpcurl blocks of README's "Quick start" and of docs/grpcurl.md, with bash, where
//   `grpcurl` is test/grpcurl.ts (a stand-in for grpcurl 1.8: see there) and
//   127.0.0.1:50051 the test server's address; the second terminal's WatchTask
//   runs in the background and must print the task's events live and end when
//   the task finishes; WatchTasks and WatchLeader, which never end, are stopped
//   after a few seconds; one line is left out (SKIPPED below);
// - the test CA block of docs/security.md: openssl as written (HOME a temporary
//   directory), the server started with the files it made, called over TLS;
// - docs/clients.md "From TypeScript": the block is examples/quickstart.ts, which runs;
// - docs/clients.md's Python quick start is the same in clients/python/README.md (CI runs it:
//   .ci/clients.sh);
// - every relative link of README.md and docs/*.md names a file that exists, and its
//   #anchor a heading of that file.
import { execFile, spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { ActionResult, TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createTestDatabase, useServer } from "./harness.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const README = await readFile(path.join(ROOT, "README.md"), "utf8");
/** The files of docs/ that hold blocks the test runs. */
const GRPCURL_DOC = await readFile(path.join(ROOT, "docs/grpcurl.md"), "utf8");
const SECURITY_DOC = await readFile(path.join(ROOT, "docs/security.md"), "utf8");
const CLIENTS_DOC = await readFile(path.join(ROOT, "docs/clients.md"), "utf8");
const README_ADDRESS = "127.0.0.1:50051";

/** Lines of README's grpcurl blocks the test does not run, each with why. */
const SKIPPED: { match: string; why: string }[] = [{ match: "$SVC/GetDesignDocuments", why: "names a Deckhand (deckhand.example) that does not exist here" }];
/** Streams that never end by themselves: stopped (SIGINT, as Ctrl-C) after this long. */
const ENDLESS = ["$SVC/WatchTasks", "$SVC/WatchLeader"];
const ENDLESS_SECONDS = 3;
/** The watch README runs in a second terminal. */
const SECOND_TERMINAL = "# second terminal";

/** The text of a section of a Markdown text: from its heading to the next heading of the same or a higher level (outside code blocks). */
function section(text: string, heading: string, file = "README"): string {
  const level = heading.match(/^#+/)![0].length;
  const lines = text.split("\n");
  const start = lines.indexOf(heading);
  expect(start, `${file} has no ${heading}`).to.be.at.least(0);
  let fenced = false;
  let end = start + 1;
  for (; end < lines.length; end++) {
    if (lines[end].startsWith("```")) fenced = !fenced;
    const m = !fenced && lines[end].match(/^(#+) /);
    if (m && m[1].length <= level) break;
  }
  return `${lines.slice(start + 1, end).join("\n")}\n`;
}

function blocks(text: string, lang: string): string[] {
  return [...text.matchAll(new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\`$`, "gm"))].map((m) => m[1]);
}

/** A block's commands: continuation lines joined (as bash reads them), comment-only lines left out. */
function commands(block: string): string[] {
  const out: string[] = [];
  let cur = "";
  for (const line of block.split("\n")) {
    cur = cur ? `${cur}\n${line}` : line;
    if (line.endsWith("\\")) continue;
    if (cur.trim() !== "" && !cur.trim().startsWith("#")) out.push(cur);
    cur = "";
  }
  return out;
}

const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

async function shimDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "statemgmt-readme-"));
  await mkdir(path.join(dir, "bin"));
  const shim = path.join(dir, "bin", "grpcurl");
  await writeFile(shim, `#!/bin/sh\nexec ${sh(process.execPath)} ${sh(path.join(ROOT, "dist/test/grpcurl.js"))} "$@"\n`);
  await chmod(shim, 0o755);
  return dir;
}

async function bash(script: string, env: NodeJS.ProcessEnv, cwd = ROOT): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn("bash", ["-c", script], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

function hasCommand(name: string): boolean {
  return process.env.PATH!.split(":").some((d) => existsSync(path.join(d, name)));
}

describe("README", function () {
  this.timeout(180_000);
  const h = useServer();
  let dir: string;
  before(async () => {
    for (const tool of ["jq", "openssl"]) {
      expect(hasCommand(tool), `README's blocks need ${tool} (Debian: apt-get install ${tool}; CI installs it)`).to.equal(true);
    }
    dir = await shimDir();
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const env = () => ({ ...process.env, PATH: `${path.join(dir, "bin")}:${process.env.PATH}` });

  describe("grpcurl blocks (README's Quick start, docs/grpcurl.md)", () => {
    interface Ran {
      command: string;
      kind: "run" | "endless" | "second terminal";
      code: number;
      stdout: string;
      stderr: string;
    }
    let ran: Ran[] = [];
    let vars: Record<string, string> = {};

    before(async () => {
      const quick = blocks(section(README, "## Quick start"), "sh").filter((b) => b.includes("grpcurl"));
      expect(quick).to.have.length(1);
      const withGrpcurl = blocks(section(GRPCURL_DOC, "# With grpcurl", "docs/grpcurl.md"), "sh");
      expect(withGrpcurl.length).to.be.at.least(5);
      const all = [...quick, ...withGrpcurl].flatMap(commands);
      for (const s of SKIPPED)
        expect(
          all.filter((c) => c.includes(s.match)),
          s.match,
        ).to.have.length(1);
      const out = path.join(dir, "out");
      await mkdir(out);
      const lines = ["set -o pipefail"];
      const kinds: Ran["kind"][] = [];
      all.forEach((written) => {
        if (SKIPPED.some((s) => written.includes(s.match))) return;
        const c = written.replaceAll(README_ADDRESS, h.server.address);
        const i = kinds.length;
        const files = `>${out}/${i}.out 2>${out}/${i}.err`;
        if (c.includes(SECOND_TERMINAL)) {
          kinds.push("second terminal");
          // Started like a second terminal; the next line waits until it shows the task's snapshot.
          lines.push(`{ ${c}\n} ${files} & bg=$!; bg_i=${i}`);
          lines.push(`for _ in $(seq 1 100); do grep -q '"task"' ${out}/${i}.out && break; sleep 0.1; done`);
        } else if (ENDLESS.some((e) => c.includes(e))) {
          kinds.push("endless");
          expect(c.startsWith("grpcurl "), c).to.equal(true);
          lines.push(`{ timeout -s INT ${ENDLESS_SECONDS} ${c}\n} ${files}; echo ${i} $? >>${out}/codes`);
        } else {
          kinds.push("run");
          lines.push(`{ ${c}\n} ${files}; echo ${i} $? >>${out}/codes`);
        }
        ran.push({ command: written, kind: kinds[i], code: -1, stdout: "", stderr: "" });
      });
      // The second terminal's watch ends by itself once the task is finished (within 10 s).
      lines.push(
        `if [ -n "$bg" ]; then for _ in $(seq 1 100); do kill -0 $bg 2>/dev/null || break; sleep 0.1; done; kill $bg 2>/dev/null; wait $bg; echo $bg_i $? >>${out}/codes; fi`,
      );
      lines.push(`printf 'ID=%s\\nKEY=%s\\nAID=%s\\n' "$ID" "$KEY" "$AID" >${out}/vars`);
      const res = await bash(lines.join("\n"), env());
      expect(res.code, res.stderr).to.equal(0);
      const codes = new Map(
        (await readFile(path.join(out, "codes"), "utf8"))
          .trim()
          .split("\n")
          .map((l) => l.split(" ").map(Number) as [number, number]),
      );
      ran = await Promise.all(
        ran.map(async (r, i) => ({
          ...r,
          code: codes.get(i) ?? -1,
          stdout: await readFile(path.join(out, `${i}.out`), "utf8"),
          stderr: await readFile(path.join(out, `${i}.err`), "utf8"),
        })),
      );
      vars = Object.fromEntries(
        (await readFile(path.join(out, "vars"), "utf8"))
          .trim()
          .split("\n")
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
    });

    it("runs every line: exit 0 (the endless streams stopped after printing)", () => {
      expect(ran.length).to.be.at.least(25);
      for (const r of ran) {
        const what = `${r.command}\n${r.stderr}`;
        if (r.kind === "endless") {
          expect(r.code, what).to.equal(124);
          expect(r.stdout.trim(), what).to.not.equal("");
        } else {
          expect(r.code, what).to.equal(0);
        }
        expect(r.stderr, what).to.equal("");
      }
    });

    it("passes values from line to line: $ID, $KEY, $AID", () => {
      expect(vars.ID).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(vars.KEY).to.match(/^[A-Za-z0-9+/]{43}=$/);
      expect(vars.AID).to.match(/^[0-9A-Z]{26}$/);
    });

    it("claims $ID itself, and its UpdateTask makes it COMPLETE with SUCCESS", async () => {
      const claim = ran.find((r) => r.command.includes("$SVC/ClaimNextTask") && r.command.includes("prepare_site"))!;
      expect(JSON.parse(claim.stdout).task.taskId).to.equal(vars.ID);
      const { task } = await h.client.getTask({ taskId: vars.ID });
      expect(TaskStatus[task!.status]).to.equal("COMPLETE");
      expect(ActionResult[task!.result!.status]).to.equal("SUCCESS");
      expect(task!.claimedBy).to.equal("orch-1");
    });

    it("the second terminal's watch prints the task live, from RUNNING to COMPLETE, and ends", () => {
      const watch = ran.find((r) => r.kind === "second terminal")!;
      expect(watch.command).to.include("$SVC/WatchTask");
      expect(watch.code, watch.stderr).to.equal(0);
      const events = watch.stdout.split(/\n(?=\{)/).map((e) => JSON.parse(e) as { task?: { status: string }; message?: { message: string } });
      expect(events[0].task?.status).to.equal("TASK_STATUS_RUNNING");
      const messages = events.filter((e) => e.message).map((e) => e.message!.message);
      expect(messages).to.deep.equal(["Error 1 on node n1", "kubelet started", "joined"]);
      expect(events.at(-1)!.task?.status).to.equal("TASK_STATUS_COMPLETE");
    });

    it("the resumed watch starts after the sequence it names", () => {
      const resumed = ran.find((r) => r.command.includes('\\"after_sequence\\":1'))!;
      expect(resumed.stdout).to.include("kubelet started").and.not.include("Error 1 on node n1");
    });

    it("writes FieldMasks as grpcurl takes them; the stand-in refuses the string form as grpcurl does", async () => {
      for (const text of [README, GRPCURL_DOC]) expect(text).to.not.match(/update_mask\\?"\s*:\s*\\?"/);
      expect(GRPCURL_DOC).to.include('\\"update_mask\\":{\\"paths\\":[\\"status\\",\\"result.status\\"]}');
      const res = await bash(
        `grpcurl -plaintext -d '{"task":{"task_id":"${vars.ID}"},"update_mask":"status"}' ${h.server.address} drydock.statemgmt.v1.StateService/UpdateTask`,
        env(),
      );
      expect(res.code).to.equal(1);
      expect(res.stderr).to.include("google.protobuf.FieldMask");
    });

    it("prints errors as grpcurl does (exit 64 + code)", async () => {
      const res = await bash(
        `grpcurl -plaintext -d '{"task_id":"00000000-0000-4000-8000-000000000000"}' ${h.server.address} drydock.statemgmt.v1.StateService/GetTask`,
        env(),
      );
      expect(res.code).to.equal(64 + 5);
      expect(res.stderr).to.match(/^ERROR:\n {2}Code: NotFound\n {2}Message: Task 0{8}-.* does not exist\n {2}Details:\n {2}1\)\t\{/);
    });
  });

  it("docs/security.md's test CA block: makes the files outside the repository, and the server serves TLS with them", async () => {
    const block = blocks(section(SECURITY_DOC, "# Security", "docs/security.md"), "sh").find((b) => b.includes("openssl req -x509"));
    expect(block, "the test CA block").to.exist;
    const cmds = commands(block!);
    const server = cmds.findIndex((c) => c.startsWith("node dist/src/main.js"));
    const call = cmds.findIndex((c) => c.startsWith("grpcurl -cacert"));
    expect([server, call]).to.deep.equal([cmds.length - 2, cmds.length - 1]);
    const home = path.join(dir, "home");
    await mkdir(home);
    const db = await createTestDatabase();
    const log = path.join(dir, "tls-server.log");
    try {
      const script = [
        "set -e -o pipefail",
        ...cmds.slice(0, server),
        // The server line as written, on a free port and the test's database.
        `${cmds[server]} --listen 127.0.0.1:0 >${log} 2>&1 &`,
        "pid=$!; trap 'kill $pid; wait $pid' EXIT",
        `for _ in $(seq 1 200); do grep -q '"msg":"ready"' ${log} && break; sleep 0.1; done`,
        `port=$(grep -m1 '"msg":"ready"' ${log} | grep -o '"address":"[^"]*"' | cut -d'"' -f4 | sed 's/.*://')`,
        `${cmds[call].replace("localhost:50051", "localhost:$port")}`,
        `if grpcurl -plaintext localhost:$port list 2>/dev/null; then echo "plaintext answered" >&2; exit 1; fi`,
      ].join("\n");
      const res = await bash(script, { ...env(), HOME: home, DATABASE_URL: db.url });
      expect(res.code, `${res.stderr}\n${await readFile(log, "utf8").catch(() => "")}`).to.equal(0);
      expect(res.stdout.split("\n")).to.include("drydock.statemgmt.v1.StateService");
      expect((await readdir(path.join(home, ".config/statemgmt-test-ca"))).sort()).to.include.members(["ca.crt", "ca.key", "server.crt", "server.key"]);
      for (const f of ["ca.key", "ca.crt", "server.key", "server.csr", "server.crt"]) expect(existsSync(path.join(ROOT, f)), f).to.equal(false);
    } finally {
      await db.drop();
    }
  });

  it("docs/clients.md, From TypeScript: the block is examples/quickstart.ts, which watches its task live to the end", async () => {
    const file = await readFile(path.join(ROOT, "examples/quickstart.ts"), "utf8");
    const ts = blocks(section(CLIENTS_DOC, "## From TypeScript", "docs/clients.md"), "ts");
    expect(ts[0]).to.equal(file);
    const cmd = blocks(section(CLIENTS_DOC, "## From TypeScript", "docs/clients.md"), "sh").find((b) => b.includes("dist/examples/quickstart.js"));
    expect(cmd).to.equal(`make build && node dist/examples/quickstart.js ${README_ADDRESS}\n`);
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(ROOT, "dist/examples/quickstart.js"), h.server.address], { timeout: 30_000 });
    expect(stdout.trim().split("\n")).to.deep.equal(["status RUNNING", "#1 Deployed n1", "#2 Deployed n2", "status COMPLETE"]);
  });

  it("docs/clients.md's Python quick start is the same in clients/python/README.md (CI runs it: .ci/clients.sh)", async () => {
    const python = await readFile(path.join(ROOT, "clients/python/README.md"), "utf8");
    const block = blocks(CLIENTS_DOC, "sh").find((b) => b.startsWith("python3 -m venv --system-site-packages"));
    expect(block).to.exist;
    expect(blocks(python, "sh")[0]).to.equal(block);
    const ci = await readFile(path.join(ROOT, ".ci/clients.sh"), "utf8");
    expect(ci).to.include("^python3 -m venv --system-site-packages");
    expect(ci).to.match(/' docs\/clients\.md\)$/m);
  });
});

/** GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces as `-`; repeats get -1, -2, … */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const m = !fenced && line.match(/^#{1,6} (.*)$/);
    if (!m) continue;
    const slug = m[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

/** The relative links of a Markdown text outside code blocks and code spans: [text](target). */
function relativeLinks(markdown: string): string[] {
  let fenced = false;
  const out: string[] = [];
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    if (fenced) continue;
    for (const m of line.replace(/`[^`]*`/g, "").matchAll(/\]\(([^)\s]+)\)/g)) {
      if (!/^[a-z][a-z0-9+.-]*:/i.test(m[1]!)) out.push(m[1]!);
    }
  }
  return out;
}

describe("README and docs/: links", () => {
  it("every relative link of README.md and docs/*.md names an existing file, and its #anchor a heading there", async () => {
    const files = ["README.md", ...(await readdir(path.join(ROOT, "docs"))).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`)];
    expect(files).to.include.members(["docs/api.md", "docs/cli.md", "docs/configuration.md", "docs/security.md", "docs/grpcurl.md"]);
    const broken: string[] = [];
    let checked = 0;
    for (const file of files) {
      const text = await readFile(path.join(ROOT, file), "utf8");
      for (const link of relativeLinks(text)) {
        checked++;
        const [target, anchor] = link.split("#") as [string, string | undefined];
        const resolved = target === "" ? path.join(ROOT, file) : path.resolve(path.dirname(path.join(ROOT, file)), decodeURIComponent(target));
        if (!existsSync(resolved)) {
          broken.push(`${file}: ${link} (no such file)`);
        } else if (anchor !== undefined && !anchors(await readFile(resolved, "utf8")).has(anchor)) {
          broken.push(`${file}: ${link} (no such heading)`);
        }
      }
    }
    expect(checked, "links checked").to.be.at.least(20);
    expect(broken).to.deep.equal([]);
  });

  it("the anchor rule: GitHub's slugs, code blocks left out", () => {
    expect([
      ...anchors(
        "# Migrating from Drydock's statemgmt\n## From Python, Go and other languages\n```sh\n# not a heading\n```\n## The contract: buf breaking\n## Errors\n## Errors\n",
      ),
    ]).to.deep.equal(["migrating-from-drydocks-statemgmt", "from-python-go-and-other-languages", "the-contract-buf-breaking", "errors", "errors-1"]);
    expect(relativeLinks("[a](docs/x.md#y) [b](https://example.com) `[c](nope.md)`\n```\n[d](nope.md)\n```\n")).to.deep.equal(["docs/x.md#y"]);
  });
});
