#!/usr/bin/env bash
# Python and Go clients against a real server (make clients-test; .ci/run calls it).
# Needs dist/ (make build) and Debian's packages: openssl protobuf-compiler
# protobuf-compiler-grpc python3-grpcio python3-protobuf python3-pytest python3-oslo.config python3-pip
# python3-setuptools python3-venv jq golang-go golang-google-grpc-dev golang-google-genproto-dev
# golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc.
#
#  1. the Python library's committed stubs match proto/ (make python-client-check);
#  2. a server on 127.0.0.1:0 with an embedded PostgreSQL, its address read from the ready line;
#  3. docs/clients.md's Python quick start block run as written (a venv with the system's
#     packages, pip install --no-deps --no-build-isolation, the quick start against that
#     server), then the library's pytest suite with that venv's python;
#  4. raw Python stubs generated into a temporary directory, the raw quick start;
#  5. Go stubs generated into a temporary GOPATH, clients/go/smoke built and run.
# Prints "clients: N passed, N failed" last (pytest's passes plus the Go checks).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=/usr/bin/python3 # Debian's, which sees python3-grpcio (a pyenv python3 on PATH would not)

work=$(mktemp -d /tmp/statemgmt-clients.XXXXXX)
chmod 755 "$work" # as root the embedded PostgreSQL runs as user postgres and must reach its data
server=""
cleanup() {
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

py_passed=0 py_failed=0 go_passed=0 go_failed=0
summary() {
  echo "(pytest $py_passed passed and $py_failed failed; go smoke $go_passed passed and $go_failed failed)"
  echo "clients: $((py_passed + go_passed)) passed, $((py_failed + go_failed)) failed"
}

echo "== python library stubs in sync with proto/"
make --no-print-directory python-client-check

echo "== server"
node dist/src/main.js --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
addr=""
for _ in $(seq 1 240); do
  addr=$(grep -m1 '"msg":"ready"' "$work/server.log" | grep -o '"address":"[^"]*"' | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.25
done
if [ -z "$addr" ]; then
  echo "the server did not become ready:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "server at $addr"
export STATEMGMT_ADDRESS=$addr

echo "== python library: docs/clients.md's quick start as written (venv, pip install), pytest"
# The block of docs/clients.md whose first line creates the venv, as written but for the
# server's address. It runs in a copy of clients/python (pip builds in the source
# tree: keep the checkout clean) with HOME a temporary directory (its ~/.venvs),
# and PATH's python3 Debian's, which sees python3-grpcio (a pyenv python3 would not).
block=$(awk '/^```sh$/ { inblock = 1; text = ""; next }
  inblock && /^```$/ { if (text ~ /^python3 -m venv --system-site-packages/) { printf "%s", text; exit } inblock = 0; next }
  inblock { text = text $0 "\n" }' docs/clients.md)
if [ -z "$block" ]; then
  echo "docs/clients.md has no Python quick start block starting with python3 -m venv" >&2
  exit 1
fi
mkdir -p "$work/tree/clients" "$work/home"
cp -r clients/python "$work/tree/clients/python"
rm -rf "$work/tree/clients/python/tests"
printf '%s\n' "$block" | sed 's/^/  /'
(cd "$work/tree" && HOME="$work/home" PATH="/usr/bin:/bin" PYTHONDONTWRITEBYTECODE=1 \
  bash -euo pipefail -c "${block//127.0.0.1:50051/$addr}")
venv_python="$work/home/.venvs/statemgmt/bin/python"
status=0
# -p no:cacheprovider: no .pytest_cache in the checkout. No test may be skipped.
# The venv's python imports the library the block installed (and Debian's grpcio,
# pytest and oslo.config through --system-site-packages).
(cd clients/python && PYTHONDONTWRITEBYTECODE=1 \
  "$venv_python" -m pytest -p no:cacheprovider -rs tests 2>&1 | tee "$work/pytest.log") || status=$?
last=$(grep -E '^=+ .* in [0-9.]+s' "$work/pytest.log" | tail -n1 || true)
py_passed=$(grep -Eo '[0-9]+ passed' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
py_failed=$(($(grep -Eo '[0-9]+ (failed|error|errors)' <<<"$last" | grep -Eo '[0-9]+' | paste -sd+ - || echo 0) + 0))
skipped=$(grep -Eo '[0-9]+ skipped' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
if [ "$status" -eq 0 ] && { [ "$py_passed" -eq 0 ] || [ "$skipped" -ne 0 ]; }; then
  echo "pytest ran no test or skipped some ($last)" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  [ "$py_failed" -gt 0 ] || py_failed=1
  summary
  exit 1
fi

echo "== raw python stubs"
clients/gen-python.sh "$work/raw"
(cd "$work" && PYTHONPATH="$work/raw" PYTHONDONTWRITEBYTECODE=1 "$PY" "$root/clients/python/examples/raw_stubs.py" "$addr")

echo "== go: stubs, build, smoke"
# Debian's Go modules are a GOPATH tree (/usr/share/gocode/src) and the module
# proxy is out of reach: GOPATH mode builds offline, resolving only what is imported.
gopath="$work/gopath"
mkdir -p "$gopath/src"
(cd proto && protoc -I . --go_out="$gopath/src" --go-grpc_out="$gopath/src" \
  drydock/statemgmt/v1/task.proto drydock/statemgmt/v1/boot_action.proto drydock/statemgmt/v1/export.proto drydock/statemgmt/v1/state_service.proto)
(export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$work/gocache" GOFLAGS= &&
  go build -o "$work/smoke" ./clients/go/smoke)
status=0
"$work/smoke" -addr "$addr" | tee "$work/smoke.log" || status=$?
go_passed=$(grep -c '^ok ' "$work/smoke.log" || true)
go_failed=$(grep -c '^FAIL ' "$work/smoke.log" || true)
if [ "$status" -ne 0 ]; then
  [ "$go_failed" -gt 0 ] || go_failed=1
  summary
  exit 1
fi
summary
