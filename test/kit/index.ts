// The test kit: what test files share, in one import.
//   - the harness (../harness.ts): a database per file, the one server
//     starter (useServer, startTestServer), decoding of errors;
//   - waiting: signals first (WatchProbe, ConnectionProbe), eventually()
//     for what no signal announces, quietPeriod() only to show that nothing
//     happens (or to pace a client);
//   - PostgreSQL: lockWaiters(), Cluster (a cluster of a test's own);
//   - tasks: range(), setStatus().
export * from "../harness.js";
export { eventually } from "./eventually.js";
export { quietPeriod } from "./quiet.js";
export { Probe } from "./probe.js";
export { WatchProbe } from "./watchProbe.js";
export { ConnectionProbe } from "./connectionProbe.js";
export { lockWaiters } from "./locks.js";
export { Cluster } from "./cluster.js";
export { range, setStatus } from "./tasks.js";
