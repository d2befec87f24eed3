#!/usr/bin/env bash
# Write a ready-to-run mvp28 config from config.toml.example, with a freshly
# generated JWT secret; or, with --env-file, the environment file the
# systemd unit reads (EnvironmentFile=-/etc/mvp28/mvp28.env).
#
# Usage: scripts/setup-env.sh [--force] [OUTPUT]      (OUTPUT defaults to config.toml)
#        scripts/setup-env.sh --env-file [--from FILE] [--force] [OUTPUT]
#                                                     (OUTPUT defaults to /etc/mvp28/mvp28.env)
#
# Optional environment overrides (substituted when set and non-empty):
#   WECHAT_APPID    -> [wechat] app_id = ""
#   WECHAT_SECRET   -> [wechat] app_secret = ""
#   OPENAI_API_KEY  -> [[llm.providers]] api_key = ""   (the "openai" provider, else the first)
#   APP_BASE_URL    -> [server] public_url = "…"
#   MVP28_CONFIG_EXAMPLE  path of the template (default: <repo>/config.toml.example)
#
# --env-file: keeps the variables mvp28 reads (the original deployment's
# names, MVP28_*, and their *_FILE forms) from FILE (e.g. the Next.js
# deployment's .env; default: the current environment), generates
# JWT_SECRET when it is missing or shorter than 32 bytes, comments out a
# PostgreSQL DATABASE_URL (mvp28 keeps its data in SQLite), and lists the
# names of the variables it left out (never their values).
#
# The output is written with mode 0600 (0640 group mvp28 when that group
# exists and this runs as root) and an existing file is never overwritten
# unless --force is given. Secrets are never printed.
set -euo pipefail

usage() {
    sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
}

force=0
output=""
env_mode=0
from=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -f|--force) force=1 ;;
        -h|--help) usage; exit 0 ;;
        --env-file) env_mode=1 ;;
        --from)
            [[ $# -ge 2 ]] || { echo "setup-env: --from needs a FILE" >&2; exit 2; }
            from=$2; shift ;;
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
if [[ -n "$from" && $env_mode -ne 1 ]]; then
    echo "setup-env: --from goes with --env-file" >&2; exit 2
fi
if [[ $env_mode -eq 1 ]]; then
    output=${output:-/etc/mvp28/mvp28.env}
else
    output=${output:-config.toml}
fi

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
if [[ $env_mode -eq 1 ]]; then
    if [[ -n "$from" && ! -f "$from" ]]; then
        echo "setup-env: $from not found" >&2; exit 1
    fi
    if [[ ! -d "$out_dir" ]]; then
        echo "setup-env: directory does not exist: $out_dir" >&2; exit 1
    fi
    tmp=$(mktemp "$out_dir/.mvp28-env.XXXXXX")
    trap 'rm -f -- "$tmp"' EXIT
    summary=$(_MVP28_JWT_SECRET="$(gen_secret)" python3 - "$from" "$tmp" <<'PY'
import os
import re
import sys
from datetime import datetime, timezone

src, dst = sys.argv[1], sys.argv[2]
KNOWN = {
    "DATABASE_URL", "JWT_SECRET", "OPENAI_API_KEY", "APP_BASE_URL",
    "WECHAT_APPID", "WECHAT_SECRET",
    "WECHAT_PAY_MCHID", "WECHAT_PAY_V3KEY", "WECHAT_PAY_SERIAL_NO",
    "SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_KEY", "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_S3_ACCESS_KEY_ID", "SUPABASE_S3_SECRET_ACCESS_KEY",
    "RUST_LOG",
}

def parse_dotenv(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[7:].lstrip()
            m = re.match(r'^([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$', line)
            if not m:
                continue
            key, val = m.group(1), m.group(2)
            if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
                val = val[1:-1]
            else:
                val = re.sub(r'\s+#.*$', '', val)
            out[key] = val
    return out

vars_ = parse_dotenv(src) if src else dict(os.environ)
def wanted(k):
    base = k[:-5] if k.endswith("_FILE") else k
    return base in KNOWN or k.startswith("MVP28_")
keep = {k: v for k, v in vars_.items() if wanted(k) and v != "" and not k.startswith("_MVP28_")}
left_out = sorted(k for k in vars_ if not wanted(k)) if src else []

SAFE = re.compile(r'^[A-Za-z0-9_./:@+=,%-]*$')
def quote(k, v):
    if SAFE.match(v):
        return v
    if "'" not in v and "\n" not in v:
        return "'" + v + "'"
    sys.stderr.write("setup-env: %s has a value that cannot be written safely (quote or newline); left out\n" % k)
    return None

notes = []
lines = []
db = keep.get("DATABASE_URL", "")
if re.match(r'^(postgres|postgresql|mysql):', db, re.I):
    del keep["DATABASE_URL"]
    notes.append("DATABASE_URL (PostgreSQL) left out: mvp28 keeps its data in SQLite at database.path")
secret = keep.get("JWT_SECRET", "")
if "JWT_SECRET_FILE" not in keep and "MVP28_AUTH__JWT_SECRET" not in keep and "MVP28_AUTH__JWT_SECRET_FILE" not in keep:
    if len(secret.encode()) < 32:
        keep["JWT_SECRET"] = os.environ["_MVP28_JWT_SECRET"]
        notes.append("JWT_SECRET generated (it was %s); users log in again once"
                     % ("missing" if not secret else "shorter than 32 bytes"))

for k in sorted(keep):
    q = quote(k, keep[k])
    if q is not None:
        lines.append("%s=%s" % (k, q))

with open(dst, "w", encoding="utf-8") as f:
    f.write("# mvp28 environment (dotenv syntax), written by scripts/setup-env.sh %s\n"
            % datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    f.write("# Read by the systemd unit (EnvironmentFile=) and by `mvp28 --env-file PATH`.\n")
    for n in notes:
        f.write("# %s\n" % n)
    if left_out:
        f.write("# not read by mvp28, left out: %s\n" % ", ".join(left_out))
    f.write("\n".join(lines) + "\n")
print("%d variables%s" % (len(lines), "".join("; " + n for n in notes)))
PY
)
    if [[ $EUID -eq 0 ]] && getent group mvp28 >/dev/null 2>&1; then
        chgrp mvp28 "$tmp" && chmod 0640 "$tmp"
    else
        chmod 0600 "$tmp"
    fi
    mv -f -- "$tmp" "$output"
    trap - EXIT
    echo "wrote $output: $summary"
    exit 0
fi
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
