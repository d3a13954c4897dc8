// The floor plan of src/ (src/README.md): every import points down the layers
// and no two folders import each other, even through others. Pure: reads the
// README's "May import" lines (the rule table, written only there) and the
// import specifiers of src/**/*.ts (type-only, re-exports and dynamic imports
// included), found by TypeScript's own scanner, so comments and strings
// never count.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { expect } from "chai";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SRC = path.join(ROOT, "src");
/** src/'s own files (main.ts, config.ts, client.ts): the process. */
const TOP = ".";

/** Folder → the folders it may import (its own is always allowed). */
type Rules = Map<string, Set<string>>;

/** The rule table of src/README.md: one "## `folder/`" section per folder (the root's: "## The root"), each with one "May import:" line. */
function parseRules(readme: string): Rules {
  const rules: Rules = new Map();
  const sections = readme.split(/^## /m).slice(1);
  for (const section of sections) {
    const heading = section.slice(0, section.indexOf("\n"));
    const folder = heading.startsWith("The root") ? TOP : /^`([a-z][A-Za-z0-9]*)\/`/.exec(heading)?.[1];
    if (folder === undefined) throw new Error(`src/README.md: section "## ${heading}" names no folder (\`name/\`)`);
    const lines = section.split("\n").filter((l) => l.startsWith("May import:"));
    if (lines.length !== 1) throw new Error(`src/README.md: section of ${folder}/ has ${lines.length} "May import:" lines, not 1`);
    const line = lines[0]!;
    if (rules.has(folder)) throw new Error(`src/README.md: ${folder}/ has two sections`);
    rules.set(folder, new Set(/May import: every folder\./.test(line) ? ["*"] : [...line.matchAll(/`([a-z][A-Za-z0-9]*)\/`/g)].map((m) => m[1]!)));
    if (rules.get(folder)!.size === 0 && !/May import: nothing\./.test(line))
      throw new Error(`src/README.md: ${folder}/'s "${line}" names no folder (say "nothing.")`);
  }
  return rules;
}

/** "core/log.ts" → "core"; "main.ts" → TOP. */
const folderOf = (rel: string): string => (rel.includes("/") ? rel.slice(0, rel.indexOf("/")) : TOP);

function walk(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** src/**\/*.ts, by path relative to src/. */
function readSources(): Map<string, string> {
  return new Map(walk(SRC).map((p) => [path.relative(SRC, p), readFileSync(p, "utf8")]));
}

/** One cycle of the graph (its nodes, the first repeated at the end), or null. */
function findCycle(graph: Map<string, Set<string>>): string[] | null {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    if (state.get(n) === "done") return null;
    if (state.get(n) === "open") return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, "open");
    stack.push(n);
    for (const m of [...(graph.get(n) ?? [])].sort()) {
      const c = visit(m);
      if (c) return c;
    }
    stack.pop();
    state.set(n, "done");
    return null;
  };
  for (const n of [...graph.keys()].sort()) {
    const c = visit(n);
    if (c) return c;
  }
  return null;
}

const label = (f: string) => (f === TOP ? "src/'s root" : `${f}/`);

interface Findings {
  /** Folders with modules that the table does not name, and folders it names that do not exist. */
  unnamed: string[];
  /** Imports the table does not allow: "from → specifier (why)". */
  upward: string[];
  /** A cycle between folders, of the imports as they are (null: none). */
  cycle: string[] | null;
  /** A cycle in the table itself (null: none). */
  tableCycle: string[] | null;
}

/** The floor plan checked: `files` by path relative to src/. */
function check(files: Map<string, string>, rules: Rules): Findings {
  const folders = new Set([...files.keys()].map(folderOf));
  const unnamed = [
    ...[...folders].filter((f) => !rules.has(f)).map((f) => `${label(f)} holds modules but src/README.md has no section for it`),
    ...[...rules.keys()].filter((f) => !folders.has(f)).map((f) => `src/README.md has a section for ${label(f)}, which holds no module`),
    ...[...rules].flatMap(([f, may]) =>
      [...may].filter((m) => m !== "*" && !rules.has(m)).map((m) => `${label(f)} may import ${m}/, which src/README.md does not describe`),
    ),
  ];
  const upward: string[] = [];
  const graph = new Map<string, Set<string>>();
  for (const [rel, text] of files) {
    const from = folderOf(rel);
    for (const { fileName: spec } of ts.preProcessFile(text, true, true).importedFiles) {
      if (!spec.startsWith(".")) continue; // a package or node: builtin
      const target = path.relative(SRC, path.resolve(SRC, path.dirname(rel), spec));
      if (target.startsWith("..")) continue; // gen/, outside src/
      const to = folderOf(target);
      if (to === from) continue;
      if (!graph.has(from)) graph.set(from, new Set());
      graph.get(from)!.add(to);
      const may = rules.get(from);
      if (may?.has("*") || may?.has(to)) continue;
      const why = to === TOP ? "nothing imports src/'s root" : `${label(from)} may not import ${label(to)}`;
      upward.push(`src/${rel} → ${spec} (${why})`);
    }
  }
  const table = new Map([...rules].map(([f, may]) => [f, may.has("*") ? new Set<string>() : may]));
  return { unnamed, upward, cycle: findCycle(graph), tableCycle: findCycle(table) };
}

describe("src/'s floor plan (src/README.md)", () => {
  const rules = parseRules(readFileSync(path.join(SRC, "README.md"), "utf8"));
  const findings = check(readSources(), rules);

  it("src/README.md describes every folder of src/, and only those", () => {
    expect(findings.unnamed).to.deep.equal([]);
  });

  it("the rule table has no cycle", () => {
    expect(findings.tableCycle?.join(" → ") ?? null).to.equal(null);
  });

  it("every import in src/ points down the layers", () => {
    expect(findings.upward).to.deep.equal([]);
  });

  it("no cycle between src/'s folders", () => {
    expect(findings.cycle?.join(" → ") ?? null).to.equal(null);
  });

  it("catches an import up the layers, an import of the root, a cycle and a folder the table misses (made-up trees)", () => {
    const made = parseRules("## `low/`\n\nMay import: nothing.\n\n## `high/`\n\nMay import: `low/`.\n\n## The root\n\nMay import: every folder.\n");
    const files = new Map([
      ["main.ts", 'import { h } from "./high/h.js";'],
      ["high/h.ts", 'import type { L } from "../low/l.js";\nexport { x } from "./x.js";'],
      ["low/l.ts", '// import { h } from "../high/h.js": a comment does not count\nconst h = await import("../high/h.js");'],
    ]);
    const f = check(files, made);
    expect(f.upward).to.deep.equal(["src/low/l.ts → ../high/h.js (low/ may not import high/)"]);
    expect(f.cycle).to.deep.equal(["high", "low", "high"]);
    expect(f.tableCycle).to.equal(null);
    expect(f.unnamed).to.deep.equal([]);
    const root = check(new Map([...files, ["low/l.ts", 'import "../main.js";']]), made);
    expect(root.upward).to.deep.equal(["src/low/l.ts → ../main.js (nothing imports src/'s root)"]);
    expect(root.cycle).to.deep.equal([".", "high", "low", "."]);
    const unnamed = check(new Map([...files, ["mid/m.ts", ""]]), made);
    expect(unnamed.unnamed).to.deep.equal(["mid/ holds modules but src/README.md has no section for it"]);
  });
});
