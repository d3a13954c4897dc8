// The TypeScript client library's documented import path ("../src/client.js"
// in README's quick start and examples/quickstart.ts, which test/readme.test.ts
// checks are the same). The library itself is src/client/.
export * from "./client/client.js";
