#!/usr/bin/env bash
# Write a ready-to-run mvp28 config from config.toml.example, with a freshly
# generated JWT secret.
#
# Usage: scripts/setup-env.sh [--force] [OUTPUT]      (OUTPUT defaults to config.toml)
#
# Optional environment overrides (substituted when set and non-empty):
#   WECHAT_APPID    -> [wechat] app_id = ""
#   WECHAT_SECRET   -> [wechat] app_secret = ""
#   OPENAI_API_KEY  -> [[llm.providers]] api_key = ""   (the "openai" provider, else the first)
#   APP_BASE_URL    -> [server] public_url = "…"
#   MVP28_CONFIG_EXAMPLE  path of the template (default: <repo>/config.toml.example)
#
# The output is written with mode 0600 and an existing file is never
# overwritten unless --force is given. Secrets are never printed.
set -euo pipefail

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

force=0
output=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -f|--force) force=1 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; [[ $# -gt 0 ]] && output=$1; break ;;
        -*) echo "setup-env: unknown option: $1" >&2; usage >&2; exit 2 ;;
        *)
            if [[ -n "$output" ]]; then
                echo "setup-env: only one OUTPUT may be given" >&2; exit 2
            fi
            output=$1 ;;
    esac
    shift
done
output=${output:-config.toml}

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
example=${MVP28_CONFIG_EXAMPLE:-$script_dir/../config.toml.example}

if [[ ! -f "$example" ]]; then
    echo "setup-env: template not found: $example" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "setup-env: python3 is required" >&2
    exit 1
fi
if [[ -e "$output" || -L "$output" ]] && [[ $force -ne 1 ]]; then
    echo "setup-env: $output already exists; refusing to overwrite (use --force)" >&2
    exit 1
fi
if [[ -d "$output" ]]; then
    echo "setup-env: $output is a directory" >&2
    exit 1
fi

gen_secret() {
    local s=""
    if command -v openssl >/dev/null 2>&1; then
        s=$(openssl rand -hex 32 2>/dev/null || true)
    fi
    if [[ ! "$s" =~ ^[0-9a-f]{64}$ ]]; then
        s=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    fi
    if [[ ! "$s" =~ ^[0-9a-f]{64}$ ]]; then
        echo "setup-env: could not generate a random secret" >&2
        return 1
    fi
    printf '%s' "$s"
}

umask 077
out_dir=$(dirname -- "$output")
if [[ ! -d "$out_dir" ]]; then
    echo "setup-env: directory does not exist: $out_dir" >&2
    exit 1
fi
tmp=$(mktemp "$out_dir/.mvp28-config.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT

jwt_secret=$(gen_secret)

# Values travel through the environment (not argv) so they never show up in ps.
applied=$(
    _MVP28_JWT_SECRET="$jwt_secret" \
    _MVP28_WECHAT_APPID="${WECHAT_APPID:-}" \
    _MVP28_WECHAT_SECRET="${WECHAT_SECRET:-}" \
    _MVP28_OPENAI_API_KEY="${OPENAI_API_KEY:-}" \
    _MVP28_APP_BASE_URL="${APP_BASE_URL:-}" \
    python3 - "$example" "$tmp" <<'PY'
import os
import re
import sys

src, dst = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    lines = f.read().splitlines(keepends=True)

HEADER = re.compile(r'^\s*(\[\[?)\s*([^\]#]+?)\s*\]\]?\s*(?:#.*)?$')
STRING_KV = re.compile(r'^(\s*([A-Za-z0-9_-]+)\s*=\s*)("(?:[^"\\\n]|\\.)*")(.*)$', re.S)

def toml_str(v):
    out = ['"']
    for ch in v:
        if ch == '\\':
            out.append('\\\\')
        elif ch == '"':
            out.append('\\"')
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append('\\u%04x' % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return ''.join(out)

# Index every uncommented `key = "string"` line with its table and, inside
# [[llm.providers]] blocks, the block's name/kind.
entries = []           # (line_no, table, key, raw_value, block_id)
table, block_id, block_meta = "", -1, {}
for i, line in enumerate(lines):
    m = HEADER.match(line)
    if m:
        table = m.group(2).replace(' ', '')
        if m.group(1) == '[[':
            block_id += 1
        continue
    m = STRING_KV.match(line)
    if not m:
        continue
    key, raw = m.group(2), m.group(3)
    entries.append((i, table, key, raw, block_id))
    if table == 'llm.providers' and key in ('name', 'kind'):
        block_meta.setdefault(block_id, {})[key] = raw.strip('"')

def replace(i, value):
    m = STRING_KV.match(lines[i])
    lines[i] = m.group(1) + toml_str(value) + m.group(4)

def first(pred):
    for e in entries:
        if pred(e):
            return e[0]
    return None

applied = []
env = os.environ

i = first(lambda e: e[1] == 'auth' and e[2] == 'jwt_secret' and e[3] == '""')
if i is None:
    sys.stderr.write('setup-env: no `jwt_secret = ""` line in the [auth] section of the template\n')
    sys.exit(3)
replace(i, env['_MVP28_JWT_SECRET'])
applied.append('auth.jwt_secret (generated)')

def override(var, label, pred):
    value = env.get(var, '')
    if not value:
        return
    i = first(pred)
    if i is None:
        sys.stderr.write('setup-env: warning: no line for %s in the template; %s ignored\n'
                         % (label, var.replace('_MVP28_', '')))
        return
    replace(i, value)
    applied.append('%s (from %s)' % (label, var.replace('_MVP28_', '')))

override('_MVP28_WECHAT_APPID', 'wechat.app_id',
         lambda e: e[1] == 'wechat' and e[2] == 'app_id' and e[3] == '""')
override('_MVP28_WECHAT_SECRET', 'wechat.app_secret',
         lambda e: e[1] == 'wechat' and e[2] == 'app_secret' and e[3] == '""')

def is_openai_block(b):
    meta = block_meta.get(b, {})
    return meta.get('name') == 'openai' or meta.get('kind') == 'openai'

if any(e[1] == 'llm.providers' and e[2] == 'api_key' and e[3] == '""' and is_openai_block(e[4])
       for e in entries):
    api_key_pred = lambda e: (e[1] == 'llm.providers' and e[2] == 'api_key'
                              and e[3] == '""' and is_openai_block(e[4]))
else:
    api_key_pred = lambda e: e[1] == 'llm.providers' and e[2] == 'api_key' and e[3] == '""'
override('_MVP28_OPENAI_API_KEY', 'llm.providers[openai].api_key', api_key_pred)
override('_MVP28_APP_BASE_URL', 'server.public_url',
         lambda e: e[1] == 'server' and e[2] == 'public_url')

with open(dst, 'w', encoding='utf-8') as f:
    f.write(''.join(lines))
print(', '.join(applied))
PY
)

chmod 0600 "$tmp"
mv -f -- "$tmp" "$output"
trap - EXIT

echo "wrote $output (mode 0600): $applied"
