// The bearer token file (--auth-tokens / STATEMGMT_AUTH_TOKENS):
//   {"identities": [{"subject": "orch-1", "roles": ["orchestrator"], "sha256": "<hex>"},
//                   {"subject": "CN=ops-cli", "roles": ["operator"]}]}
// Entries with sha256 are bearer tokens (only the SHA-256 of a token is
// stored); entries without give roles to a TLS client-certificate subject
// (see certificate.ts). The file is re-read when its directory changes
// (debounced) and on reload() (SIGHUP); a file that does not parse keeps
// the previous table and the reason is logged.
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { watch, type FSWatcher } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../core/log.js";
import { isRole, ROLES, type Caller, type Role } from "./roles.js";

export interface TokenTable {
  /** Lower-case hex SHA-256 of a token → who presents it. */
  byHash: ReadonlyMap<string, Caller>;
  /** Certificate subject (e.g. "CN=ops-cli") → who presents it. */
  bySubject: ReadonlyMap<string, Caller>;
}

export const EMPTY_TABLE: TokenTable = { byHash: new Map(), bySubject: new Map() };

/** The hex SHA-256 a token is stored as. */
export const tokenHash = (token: string): string => createHash("sha256").update(token, "utf8").digest("hex");

const KEYS = new Set(["subject", "roles", "sha256"]);

/** Parses the file's text; throws an Error saying what is wrong (never quoting a hash). */
export function parseTokenFile(text: string): TokenTable {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    // Not the parser's message: it quotes the text.
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    throw new Error(`not valid JSON${at ? ` (at character ${at})` : ""}`);
  }
  const list = (doc as { identities?: unknown } | null)?.identities;
  if (typeof doc !== "object" || doc === null || Array.isArray(doc) || !Array.isArray(list)) {
    throw new Error('must be an object with an "identities" array');
  }
  const byHash = new Map<string, Caller>();
  const bySubject = new Map<string, Caller>();
  list.forEach((e: unknown, i) => {
    const where = `identities[${i}]`;
    if (typeof e !== "object" || e === null || Array.isArray(e)) throw new Error(`${where} is not an object`);
    const o = e as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => !KEYS.has(k));
    if (extra.length) throw new Error(`${where} has unknown fields ${extra.join(", ")} (allowed: subject, roles, sha256)`);
    if (typeof o.subject !== "string" || o.subject === "" || o.subject.length > 255) {
      throw new Error(`${where}.subject must be a string of 1 to 255 characters`);
    }
    if (!Array.isArray(o.roles) || !o.roles.every((r): r is Role => typeof r === "string" && isRole(r))) {
      throw new Error(`${where}.roles must be an array of role names: ${ROLES.join(", ")}`);
    }
    const identity: Caller = Object.freeze({ subject: o.subject, roles: [...new Set(o.roles)], authenticated: true });
    if (o.sha256 === undefined) {
      if (bySubject.has(identity.subject)) throw new Error(`${where}: certificate subject "${identity.subject}" is listed twice`);
      bySubject.set(identity.subject, identity);
      return;
    }
    if (typeof o.sha256 !== "string" || !/^[0-9a-f]{64}$/i.test(o.sha256)) {
      throw new Error(`${where}.sha256 must be 64 hex digits (the SHA-256 of the token)`);
    }
    const hash = o.sha256.toLowerCase();
    if (byHash.has(hash)) throw new Error(`${where}: the same token hash is listed twice`);
    byHash.set(hash, identity);
  });
  return { byHash, bySubject };
}

/** How long the directory must be quiet after a change before the file is read (editors and renames come in bursts). */
const DEBOUNCE_MS = 100;

export interface ReloadResult {
  ok: boolean;
  /** The table changed (false when the text is the same as last time). */
  changed: boolean;
  error?: string;
}

/**
 * The token file, loaded and kept current. Emits "reload" with a
 * ReloadResult after every attempt (tests await it).
 */
export class TokenFile extends EventEmitter {
  table: TokenTable = EMPTY_TABLE;
  private text: string | undefined;
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly file: string,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Reads the file for the first time and starts watching; throws when it cannot be read or parsed. */
  async start(): Promise<void> {
    const text = await readFile(this.file, "utf8").catch((err: Error) => {
      throw new Error(`cannot read the auth token file ${this.file}: ${err.message}`);
    });
    try {
      this.table = parseTokenFile(text);
    } catch (err) {
      throw new Error(`auth token file ${this.file}: ${(err as Error).message}`);
    }
    this.text = text;
    this.log.info({ file: this.file, tokens: this.table.byHash.size, certificateSubjects: this.table.bySubject.size }, "auth tokens loaded");
    // The directory, not the file: rotation by rename (and Kubernetes'
    // symlink swap of mounted secrets) replaces the file watched.
    this.watcher = watch(path.dirname(this.file), () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.reload(), DEBOUNCE_MS);
    });
    this.watcher.on("error", (err) => this.log.warn({ file: this.file, err: err.message }, "cannot watch the auth token file; SIGHUP still reloads it"));
  }

  /** Reads the file again; a file that cannot be read or parsed keeps the previous table. */
  reload(): Promise<ReloadResult> {
    const run = this.queue.then(() => this.readAgain());
    this.queue = run;
    return run;
  }

  private async readAgain(): Promise<ReloadResult> {
    let result: ReloadResult;
    try {
      const text = await readFile(this.file, "utf8");
      if (text === this.text) {
        result = { ok: true, changed: false };
      } else {
        this.table = parseTokenFile(text);
        this.text = text;
        result = { ok: true, changed: true };
        this.log.info({ file: this.file, tokens: this.table.byHash.size, certificateSubjects: this.table.bySubject.size }, "auth tokens reloaded");
      }
    } catch (err) {
      result = { ok: false, changed: false, error: (err as Error).message };
      this.log.warn({ file: this.file, error: result.error }, "auth token file not reloaded; keeping the previous one");
    }
    this.emit("reload", result);
    return result;
  }

  close(): void {
    clearTimeout(this.timer);
    this.watcher?.close();
  }
}
