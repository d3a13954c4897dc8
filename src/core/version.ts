// This build's version, from package.json (read once at start-up).
import { readFileSync } from "node:fs";

const here = new URL(".", import.meta.url).pathname;
const root = here.includes("/dist/") ? new URL("../../../package.json", import.meta.url) : new URL("../../package.json", import.meta.url);

export const VERSION: string = (JSON.parse(readFileSync(root, "utf8")) as { version: string }).version;
