#!/usr/bin/env bash
# Smoke test of every HTTP endpoint of a running mvp28 server.
#
# Usage: scripts/test-endpoints.sh BASE_URL          e.g. http://127.0.0.1:8080
#
# Needs curl and python3 (JSON parsing). The server must have the `dev` login
# provider on (the default with no WeChat app id configured, or auth.dev_login = true):
# the test logs in as a throw-away user `dev:smoke-<random>`, exercises the API
# with it, and finally deletes that account.
#
# Prints one line per check, "ok   <desc>" or "FAIL <desc>: <detail>", and exits
# non-zero if any check failed. Environment: CURL_TIMEOUT (seconds, default 60).
set -euo pipefail

if [[ $# -lt 1 && -z "${BASE_URL:-}" ]] || [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
BASE_URL=${1:-$BASE_URL}
BASE_URL=${BASE_URL%/}
CURL_TIMEOUT=${CURL_TIMEOUT:-60}

for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "test-endpoints: $tool is required" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
BODY="$work/body"
HDRS="$work/headers"
AUTH="$work/auth"      # "Authorization: Bearer …", passed as -H @file (keeps the token off argv)
: >"$AUTH"

passed=0
failed=0
ok()   { printf 'ok   %s\n' "$1"; passed=$((passed + 1)); }
fail() { printf 'FAIL %s: %s\n' "$1" "$2"; failed=$((failed + 1)); }
skipped=0
# A route this build does not have (404 not_found) is reported, not failed.
skip() { printf 'skip %s: %s\n' "$1" "$2"; skipped=$((skipped + 1)); }

# First 300 bytes of the last response body, on one line.
snippet() {
    if [[ -s "$BODY" ]]; then
        head -c 300 "$BODY" | tr '\n\r' '  '
    else
        printf '(empty body)'
    fi
}

# req [--noauth] METHOD PATH [JSON_BODY]
# Sets STATUS (000 on a transport error) and CTYPE; the body lands in $BODY.
req() {
    local auth=1
    if [[ "$1" == --noauth ]]; then auth=0; shift; fi
    local method=$1 path=$2
    local args=(-sS -X "$method" -o "$BODY" -D "$HDRS" -w '%{http_code} %{content_type}'
                --max-time "$CURL_TIMEOUT" -H 'Accept: application/json')
    if [[ $auth -eq 1 && -s "$AUTH" ]]; then args+=(-H "@$AUTH"); fi
    if [[ $# -ge 3 ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$3")
    fi
    local out
    : >"$BODY"
    if ! out=$(curl "${args[@]}" "$BASE_URL$path" 2>"$work/curl.err"); then
        STATUS=000
        CTYPE=""
        tr '\n' ' ' <"$work/curl.err" >"$BODY"
        return 0
    fi
    STATUS=${out%% *}
    CTYPE=${out#* }
}

# jpy MODE EXPR: evaluate a Python expression over the last body parsed as JSON
# (bound to `d`; the environment is `E`). MODE check: exit 0 iff truthy;
# MODE get: print the value (strings raw, anything else as JSON).
jpy() {
    python3 - "$1" "$2" "$BODY" <<'PY'
import json, os, sys
mode, expr, path = sys.argv[1:4]
try:
    with open(path, 'rb') as f:
        d = json.loads(f.read().decode('utf-8'))
except Exception as e:
    sys.stderr.write('body is not JSON (%s)' % e)
    sys.exit(2)
try:
    v = eval(expr, {'d': d, 'E': os.environ})
except Exception as e:
    sys.stderr.write('%s: %s' % (type(e).__name__, e))
    sys.exit(1)
if mode == 'check':
    sys.exit(0 if v else 1)
sys.stdout.write(v if isinstance(v, str) else json.dumps(v))
PY
}
jget() { jpy get "$1" 2>/dev/null; }

# expect DESC "CODES" [EXPR...]: the last response has one of CODES and every
# Python EXPR holds. Prints the ok/FAIL line. Call as `expect … || true`.
expect() {
    local desc=$1 codes=$2 e err
    shift 2
    if [[ " $codes " != *" $STATUS "* ]]; then
        fail "$desc" "HTTP $STATUS (want ${codes// / or }): $(snippet)"
        return 1
    fi
    for e in "$@"; do
        if ! err=$(jpy check "$e" 2>&1); then
            fail "$desc" "HTTP $STATUS, expected $e${err:+ [$err]}: $(snippet)"
            return 1
        fi
    done
    ok "$desc"
}

# Shape of every error body: {"error": {"code", "message", ...}}
ERR_SHAPE='isinstance(d.get("error"), dict) and isinstance(d["error"].get("code"), str) and isinstance(d["error"].get("message"), str)'
err_code() { printf '%s and d["error"]["code"] == "%s"' "$ERR_SHAPE" "$1"; }

rand=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "# mvp28 smoke test against $BASE_URL (user dev:smoke-$rand)"

# ------------------------------------------------------------------ health
req --noauth GET /api/health
expect "GET /api/health -> 200 status ok" "200" \
    'd.get("status") == "ok"' '"version" in d' || true

# ------------------------------------------------------------------ login
req --noauth POST /api/auth/wechat "{\"code\":\"dev:smoke-$rand\"}"
if [[ "$STATUS" != 200 ]]; then
    fail "POST /api/auth/wechat (dev login)" "HTTP $STATUS: $(snippet)"
    if [[ "$STATUS" == 000 ]]; then
        echo "hint: is the server running at $BASE_URL?" >&2
    else
        echo "hint: this smoke test logs in with the dev provider; start the server without" >&2
        echo "      wechat.app_id, or set auth.dev_login = true (MVP28_AUTH__DEV_LOGIN=true)." >&2
    fi
    exit 1
fi
token=$(jget 'd["token"]' || true)
user_id=$(jget 'd["user"]["id"]' || true)
if [[ -n "$token" && -n "$user_id" ]] && jpy check 'isinstance(d.get("expires_at"), str)' 2>/dev/null; then
    ok "POST /api/auth/wechat (dev login) -> token, expires_at, user.id"
else
    fail "POST /api/auth/wechat (dev login)" "missing token/expires_at/user.id: $(snippet | sed 's/"token" *: *"[^"]*"/"token":"…"/')"
    exit 1
fi
printf 'Authorization: Bearer %s\n' "$token" >"$AUTH"
export SMOKE_USER_ID="$user_id"

# ------------------------------------------------------------------ auth errors
req --noauth GET /api/me
expect "GET /api/me without token -> 401 unauthorized" "401" "$(err_code unauthorized)" || true

# ------------------------------------------------------------------ me
req GET /api/me
expect "GET /api/me -> user + quota fields" "200" \
    'str(d["user"]["id"]) == E["SMOKE_USER_ID"]' \
    'all(isinstance(d["quota"].get(k), int) for k in ("free_limit", "free_used_today", "free_remaining", "balance_fen", "price_fen"))' \
    || true

# ------------------------------------------------------------------ chat
req POST /api/chat '{"message":"hello"}'
sid=""
if expect "POST /api/chat -> assistant reply" "200" \
    'isinstance(d.get("session_id"), str) and d["session_id"] != ""' \
    'isinstance(d["message"].get("content"), str) and d["message"]["content"].strip() != ""' \
    'd["message"].get("role") == "assistant"' \
    'all(k in d["quota"] for k in ("free_remaining", "balance_fen", "charged_fen"))'; then
    sid=$(jget 'd["session_id"]' || true)
fi
export SMOKE_SID="$sid"

req POST /api/chat '{"message":'
expect "POST /api/chat malformed JSON -> 400 invalid_request" "400" "$(err_code invalid_request)" || true

req POST /api/chat '{"message":"hi","no_such_field":1}'
expect "POST /api/chat unknown field -> 400 invalid_request" "400" "$(err_code invalid_request)" || true

if [[ -n "$sid" ]]; then
    req GET /api/sessions
    expect "GET /api/sessions -> contains the new session" "200" \
        'any(str(s.get("id")) == E["SMOKE_SID"] for s in d["items"])' '"next_cursor" in d' || true

    req GET "/api/sessions/$sid/messages"
    expect "GET /api/sessions/{id}/messages -> 2 items (user, assistant)" "200" \
        'len(d["items"]) == 2' '[m.get("role") for m in d["items"]] == ["user", "assistant"]' || true

    # SSE: delta events, then one done event carrying the stored reply.
    req POST /api/chat/stream "{\"message\":\"hello again\",\"session_id\":\"$sid\"}"
    if [[ "$STATUS" == 404 ]]; then
        skip "POST /api/chat/stream" "not in this build (404)"
    elif [[ "$STATUS" == 200 && "$CTYPE" == text/event-stream* ]] \
        && grep -q '^event: *delta' "$BODY" && grep -q '^event: *done' "$BODY"; then
        ok "POST /api/chat/stream -> SSE delta + done"
    else
        fail "POST /api/chat/stream -> SSE delta + done" "HTTP $STATUS, content-type '$CTYPE': $(snippet)"
    fi
else
    for d in "GET /api/sessions" "GET /api/sessions/{id}/messages" "POST /api/chat/stream"; do
        fail "$d" "skipped: no session id (POST /api/chat failed)"
    done
fi

# ------------------------------------------------------------------ upload
size=64
head -c "$size" /dev/urandom >"$work/upload.bin"
req POST /api/upload/presign "{\"filename\":\"smoke.png\",\"content_type\":\"image/png\",\"size\":$size}"
if [[ "$STATUS" == 404 ]]; then
    skip "uploads (presign, PUT, commit, download)" "not in this build (404)"
elif expect "POST /api/upload/presign -> PUT url" "200" \
    'isinstance(d.get("upload_id"), str) and d["upload_id"] != ""' \
    'd.get("method") == "PUT" and isinstance(d.get("url"), str) and d["url"] != ""' \
    'isinstance(d.get("headers", {}), dict)'; then
    upload_id=$(jget 'd["upload_id"]' || true)
    put_url=$(jget 'd["url"]' || true)
    [[ "$put_url" == /* ]] && put_url="$BASE_URL$put_url"
    jget '"".join("%s: %s\n" % (k, v) for k, v in (d.get("headers") or {}).items())' >"$work/put-headers" || true
    put_args=(-sS -o "$work/put.out" -w '%{http_code}' --max-time "$CURL_TIMEOUT" -X PUT
              --data-binary "@$work/upload.bin")
    if [[ -s "$work/put-headers" ]]; then put_args+=(-H "@$work/put-headers"); fi
    if ! grep -qi '^content-type:' "$work/put-headers" 2>/dev/null; then
        put_args+=(-H 'Content-Type: image/png')
    fi
    put_status=$(curl "${put_args[@]}" "$put_url" 2>&1) || put_status="000 $put_status"
    if [[ "$put_status" == 2?? ]]; then
        ok "PUT presigned upload url -> $put_status"
    else
        fail "PUT presigned upload url" "HTTP $put_status: $(head -c 300 "$work/put.out" 2>/dev/null | tr '\n' ' ')"
    fi

    export SMOKE_SIZE="$size"
    req POST /api/upload/commit "{\"upload_id\":\"$upload_id\"}"
    if expect "POST /api/upload/commit -> media" "200" \
        'd["media"]["size"] == int(E["SMOKE_SIZE"]) and d["media"]["content_type"] == "image/png"' \
        'isinstance(d["media"].get("id"), str) and isinstance(d["media"].get("url"), str)'; then
        media_url=$(jget 'd["media"]["url"]' || true)
        [[ "$media_url" == /* ]] && media_url="$BASE_URL$media_url"
        if curl -fsS --max-time "$CURL_TIMEOUT" -o "$work/download.bin" "$media_url" 2>"$work/curl.err" \
            && cmp -s "$work/upload.bin" "$work/download.bin"; then
            ok "GET media url (no bearer) -> same bytes"
        else
            fail "GET media url (no bearer) -> same bytes" "$(tr '\n' ' ' <"$work/curl.err")"
        fi
    else
        fail "GET media url (no bearer)" "skipped: commit failed"
    fi
else
    fail "PUT presigned upload url" "skipped: presign failed"
    fail "POST /api/upload/commit" "skipped: presign failed"
fi

# ------------------------------------------------------------------ media (docs/media.md)
req GET /api/jobs/job_nonexistent
expect "GET /api/jobs/{unknown} -> 404" "404" "$(err_code not_found)" || true

req POST /api/files/batch '{"media_ids":[],"action":"extract_text"}'
expect "POST /api/files/batch empty -> 422 validation" "422" "$(err_code validation)" || true

# 503 voice_disabled without voice.api_key; with one, a real (charged) synthesis.
req POST /api/voice/speech '{"text":"smoke test"}'
expect "POST /api/voice/speech -> media or 503 voice_disabled" "200 503" \
    '(d.get("media") or {}).get("content_type") == "audio/mpeg" or d["error"]["code"] == "voice_disabled"' || true

# ------------------------------------------------------------------ location
req POST /api/location/report '{"latitude":31.23,"longitude":121.47}'
expect "POST /api/location/report -> accepted 1" "200 201 202" 'd.get("accepted") == 1' || true

req GET /api/location
expect "GET /api/location -> 1 point" "200" 'len(d["items"]) == 1' || true

req DELETE /api/location
expect "DELETE /api/location -> 204" "204" || true

req GET /api/location
expect "GET /api/location after delete -> 0 points" "200" 'len(d["items"]) == 0' || true

# ------------------------------------------------------------------ pay
req GET /api/pay/orders/nonexistent
expect "GET /api/pay/orders/nonexistent -> 404 or 503" "404 503" "$ERR_SHAPE" || true

# Checkout: 503 payments_disabled when WeChat Pay is not configured; when it is,
# a real (unpaid, expiring) JSAPI order is created. 422: 600 fen is not one of
# the configured top-up amounts.
req POST /api/pay/checkout '{"amount_fen":600}'
case "$STATUS" in
    200) expect "POST /api/pay/checkout -> pay_params" "200" \
            'isinstance(d.get("out_trade_no"), str)' \
            'all(k in d["pay_params"] for k in ("appId", "timeStamp", "nonceStr", "package", "signType", "paySign"))' || true ;;
    503) expect "POST /api/pay/checkout -> 503 payments_disabled" "503" "$(err_code payments_disabled)" || true ;;
    *)   expect "POST /api/pay/checkout -> 200/503/422" "422" "$(err_code validation)" || true ;;
esac

# A forged, unsigned notification must never be accepted.
req --noauth POST /api/pay/wechat/webhook '{"id":"smoke","event_type":"TRANSACTION.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"AAAA","nonce":"000000000000","associated_data":"transaction"}}'
if [[ "$STATUS" =~ ^[45][0-9][0-9]$ ]]; then
    ok "POST /api/pay/wechat/webhook unsigned -> rejected ($STATUS)"
else
    fail "POST /api/pay/wechat/webhook unsigned -> rejected" "HTTP $STATUS: $(snippet)"
fi

# ------------------------------------------------------------------ errors
req GET /api/nope
expect "GET /api/nope -> 404 JSON error" "404" "$ERR_SHAPE" || true

# ------------------------------------------------------------------ cleanup
if [[ -n "$sid" ]]; then
    req DELETE "/api/sessions/$sid"
    expect "DELETE /api/sessions/{id} -> 204" "204" || true

    req GET /api/sessions
    expect "GET /api/sessions after delete -> session gone" "200" \
        'all(str(s.get("id")) != E["SMOKE_SID"] for s in d["items"])' || true
else
    fail "DELETE /api/sessions/{id}" "skipped: no session id"
fi

req DELETE /api/me
expect "DELETE /api/me -> 204" "204" || true

req GET /api/me
expect "GET /api/me after account deletion -> 401" "401" "$ERR_SHAPE" || true

total=$((passed + failed))
if [[ $failed -gt 0 ]]; then
    echo "# $failed of $total checks FAILED"
    exit 1
fi
echo "# all $total checks passed ($skipped skipped)"
