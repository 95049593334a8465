#!/usr/bin/env bash
# Schema-driven API testing: Schemathesis reads /api/openapi.json and tries
# what the document allows against the real binary, signed in as a tenant
# and as an admin, checking that no answer is a 5xx and that every answer's
# status, content type and body are the documented ones.
#
#   scripts/schemathesis.sh               # a bounded pass (CI runs this)
#   MAX_EXAMPLES=200 MAX_TIME=900 scripts/schemathesis.sh   # a longer one
#
# Needs python3 (Schemathesis is installed, pinned, into a virtualenv the
# first time) and the voxflow binary (built when VOXFLOW_BIN is not given).
# Every provider URL points at a closed local port and tenants may only use
# that one LLM server, so nothing leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
# Seconds for each of the two passes (tenant, admin).
MAX_TIME=${MAX_TIME:-120}
VENV=${SCHEMATHESIS_VENV:-${TMPDIR:-/tmp}/voxflow-schemathesis-$SCHEMATHESIS_VERSION}

if [ ! -x "$VENV/bin/schemathesis" ]; then
    if ! python3 -m venv "$VENV"; then
        echo "python3 cannot make a virtualenv: install python3-venv (Debian)" >&2
        exit 1
    fi
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ -z "${VOXFLOW_BIN:-}" ]; then
    cargo build --quiet --bin voxflow
    VOXFLOW_BIN="${CARGO_TARGET_DIR:-target}/debug/voxflow"
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

closed=http://127.0.0.1:9
admin_password="Sch3ma-Admin-$(date +%s)"
VOXFLOW_ADMIN_PASSWORD="$admin_password" \
    VOXFLOW_RATE_LIMIT=off \
    VOXFLOW_GROQ_BASE_URL=$closed \
    VOXFLOW_DEEPGRAM_BASE_URL=$closed \
    VOXFLOW_TWILIO_BASE_URL=$closed \
    VOXFLOW_SPEECH_STT_BASE_URL=$closed \
    VOXFLOW_SPEECH_TTS_BASE_URL=$closed \
    VOXFLOW_LLM_ALLOWED_URLS=$closed/v1 \
    VOXFLOW_PROVIDER_TIMEOUT_SECS=2 \
    VOXFLOW_LLM_TIMEOUT_SECS=2 \
    "$VOXFLOW_BIN" serve --data-dir "$work/data" --http 127.0.0.1:0 \
    >"$work/server.log" 2>&1 &
server_pid=$!

base=""
for _ in $(seq 1 100); do
    base=$(sed -n 's/^VoxFlow listening on \(http:[^ ]*\)$/\1/p' "$work/server.log")
    [ -n "$base" ] && break
    sleep 0.1
done
if [ -z "$base" ]; then
    echo "the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
fi

# POSTs JSON; prints the body, fails on a non-2xx answer.
post() {
    local path=$1 token=$2 body=$3
    curl -sS --fail-with-body -X POST "$base$path" \
        -H 'content-type: application/json' \
        ${token:+-H "authorization: Bearer $token"} \
        -d "$body"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

tenant=$(post /api/auth/register "" \
    '{"email":"schemathesis@example.com","password":"Sch3ma-Tenant-1","organization_name":"Fuzz"}' |
    field '["data"]["token"]')
post /api/api-keys/groq "$tenant" '{"api_key":"gsk_SchemathesisTenantKey0000000000Zq7w"}' >/dev/null
agent=$(post /api/agents "$tenant" \
    '{"name":"Ann","type":"INBOUND","use_case":"support","description":"You answer questions politely."}' |
    field '["data"]["id"]')
printf 'phone_number,first_name\n+14155550101,Ann\n+14155550102,Bo\n' >"$work/contacts.csv"
campaign=$(curl -sS --fail-with-body "$base/api/campaigns" -H "authorization: Bearer $tenant" \
    -F name=Fuzz -F "agent_id=$agent" -F "file=@$work/contacts.csv;type=text/csv" |
    field '["data"]["id"]')
run_id=$(post /api/calls/web/start "$tenant" "{\"agent_id\":\"$agent\"}" | field '["data"]["run_id"]')
tenant_id=$(curl -sS --fail-with-body "$base/api/auth/me" -H "authorization: Bearer $tenant" |
    field '["data"]["id"]')
admin=$(post /api/auth/login "" "{\"email\":\"admin@voxflow.com\",\"password\":\"$admin_password\"}" |
    field '["data"]["token"]')

# One worker: Hypothesis describes its strategies with Python's `ast`,
# which is not safe across threads on this Python (a "recursion depth
# mismatch" error in the coverage phase).
# The tenant's real objects fill the path parameters of the routes that
# read them (deletions excepted, so they stay for the rest of the pass):
# without them nearly every case of those routes would be a 404.
cat >"$work/schemathesis.toml" <<TOML
[[operations]]
include-path-regex = "^/api/agents/\\\\{id\\\\}"
exclude-method = "DELETE"
parameters = { "path.id" = "$agent" }

[[operations]]
include-path-regex = "^/api/campaigns/\\\\{id\\\\}"
exclude-method = "DELETE"
parameters = { "path.id" = "$campaign" }

[[operations]]
include-path-regex = "^/api/calls/(run|transcript)/\\\\{id\\\\}"
parameters = { "path.id" = "$run_id" }

[[operations]]
include-path-regex = "^/api/admin/users/\\\\{id\\\\}"
exclude-method = "DELETE"
parameters = { "path.id" = "$tenant_id" }
TOML

run() {
    local who=$1 token=$2
    shift 2
    echo "== Schemathesis as the $who =="
    "$VENV/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/api/openapi.json" \
        --url "$base" \
        --header "Authorization: Bearer $token" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
        --max-examples "$MAX_EXAMPLES" \
        --max-time "$MAX_TIME" \
        --phases examples,coverage,fuzzing \
        --workers 1 \
        --request-timeout 10 \
        --generation-database none \
        --no-color \
        "$@"
}

status=0
# Signing out would end the session the rest of the pass uses.
run tenant "$tenant" --exclude-path-regex '^/api/admin/' --exclude-path /api/auth/logout || status=1
run admin "$admin" --include-path-regex '^/api/admin/' || status=1
if [ "$status" -ne 0 ]; then
    echo "Schemathesis found failures; the server's log:" >&2
    tail -n 50 "$work/server.log" >&2
fi
exit "$status"
