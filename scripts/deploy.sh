#!/usr/bin/env bash
# Build, install and (re)start mvp28 as a systemd service on this machine.
#
# Usage: scripts/deploy.sh [--dry-run] [--skip-build] [--no-doctor]
#
#   --dry-run     print the steps without changing anything
#   --skip-build  install the existing target/release/mvp28 (no cargo build)
#   --no-doctor   do not run `mvp28 doctor` before (re)starting
#
# Environment:
#   PREFIX    install prefix for the binary (default /usr/local -> /usr/local/bin/mvp28)
#   BASE_URL  where to poll /api/health (default: derived from server.bind in the config)
#   WECHAT_APPID, WECHAT_SECRET, OPENAI_API_KEY, APP_BASE_URL
#             used only when /etc/mvp28/config.toml does not exist yet
#             (passed to scripts/setup-env.sh)
#
# /etc/mvp28/mvp28.env (the original deployment's variables, optional; see
# scripts/setup-env.sh --env-file) is read by the unit and by every step here.
#
# Run as root, or as a user with sudo (root-only steps are run through sudo).
# Idempotent: an existing config and existing credentials are left alone.
set -euo pipefail

dry_run=0
skip_build=0
doctor=1
for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) dry_run=1 ;;
        --skip-build) skip_build=1 ;;
        --no-doctor) doctor=0 ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "deploy: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${PREFIX:-/usr/local}
bin="$prefix/bin/mvp28"
svc_user=mvp28
state_dir=/var/lib/mvp28
conf_dir=/etc/mvp28
config="$conf_dir/config.toml"
env_file="$conf_dir/mvp28.env"
doc_dir="$prefix/share/doc/mvp28"
cred_dir="$conf_dir/credentials"
unit_src="$repo/systemd/mvp28.service"
unit_dst=/etc/systemd/system/mvp28.service
health_timeout=30

if [[ $EUID -eq 0 ]]; then
    SUDO=()
else
    SUDO=(sudo)
fi

step() { printf '\n==> %s\n' "$*"; }
# Print a command (shell-quoted) and run it unless --dry-run.
run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    if [[ $dry_run -eq 0 ]]; then
        "$@"
    fi
}
as_root() { run "${SUDO[@]}" "$@"; }
# Run a command as the service user, from its state directory (relative
# paths in the config resolve from the working directory, as under systemd).
as_service() {
    if [[ $EUID -eq 0 ]] && command -v runuser >/dev/null 2>&1; then
        run runuser -u "$svc_user" -- env -C "$state_dir" "$@"
    else
        run sudo -u "$svc_user" -- env -C "$state_dir" "$@"
    fi
}
die() { echo "deploy: $*" >&2; exit 1; }
# Read-only probes that need root. In a dry run as non-root, probe without sudo
# (no password prompt; unreadable files then look absent).
root_cmd() {
    if [[ $dry_run -eq 1 && $EUID -ne 0 ]]; then
        "$@"
    else
        "${SUDO[@]}" "$@"
    fi
}

if [[ $dry_run -eq 1 ]]; then
    echo "deploy: dry run, nothing will be changed"
elif [[ $EUID -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    die "run as root (sudo not found)"
fi
[[ -f "$unit_src" ]] || die "missing $unit_src"

# ---------------------------------------------------------------- build
if [[ $skip_build -eq 0 ]]; then
    step "build (cargo build --release --locked)"
    command -v cargo >/dev/null 2>&1 || [[ $dry_run -eq 1 ]] ||
        die "cargo not found in PATH (run this script as the build user; root steps use sudo) or pass --skip-build"
    (cd "$repo" && run cargo build --release --locked)
fi
built="$repo/target/release/mvp28"
[[ -x "$built" || $dry_run -eq 1 ]] || die "no binary at $built (build first or drop --skip-build)"

# ---------------------------------------------------------------- install binary
step "install binary to $bin"
as_root install -d -m 0755 "$prefix/bin"
# Install next to the target and rename, so a running binary is replaced atomically.
as_root install -m 0755 "$built" "$bin.new"
as_root mv -f "$bin.new" "$bin"
# The unit's Documentation= points here.
as_root install -d -m 0755 "$doc_dir"
as_root install -m 0644 "$repo/README.md" "$doc_dir/README.md"

# ---------------------------------------------------------------- service user
step "service user $svc_user"
if id -u "$svc_user" >/dev/null 2>&1; then
    echo "user $svc_user exists"
else
    nologin=/usr/sbin/nologin
    [[ -x "$nologin" ]] || nologin=/sbin/nologin
    if getent group "$svc_user" >/dev/null 2>&1; then
        group_opt=(--gid "$svc_user")
    else
        group_opt=(--user-group)
    fi
    as_root useradd --system "${group_opt[@]}" --home-dir "$state_dir" --no-create-home \
        --shell "$nologin" --comment "mvp28 service" "$svc_user"
fi

# ---------------------------------------------------------------- directories
step "directories"
as_root install -d -m 0750 -o "$svc_user" -g "$svc_user" "$state_dir"
as_root install -d -m 0750 -o "$svc_user" -g "$svc_user" "$state_dir/objects"
as_root install -d -m 0750 -o root -g "$svc_user" "$conf_dir"
as_root install -d -m 0700 -o root -g root "$cred_dir"

# ---------------------------------------------------------------- systemd unit
step "systemd unit $unit_dst"
if [[ "$prefix" == /usr/local ]]; then
    as_root install -m 0644 "$unit_src" "$unit_dst"
else
    # The unit names /usr/local/bin/mvp28; point it at the binary actually installed.
    unit_tmp=$(mktemp)
    trap 'rm -f -- "$unit_tmp"' EXIT
    sed -e "s#/usr/local/bin/mvp28#$bin#g" -e "s#/usr/local/share/doc/mvp28#$doc_dir#g" \
        "$unit_src" >"$unit_tmp"
    as_root install -m 0644 "$unit_tmp" "$unit_dst"
fi

# ---------------------------------------------------------------- config
# Section-aware rewrite of `key = "…"` lines in a TOML file, in place.
# Usage: set_toml_strings FILE section.key=value ...   (runs as root)
set_toml_strings() {
    local file=$1; shift
    run "${SUDO[@]}" python3 - "$file" "$@" <<'PY'
import os, re, sys
path, assigns = sys.argv[1], sys.argv[2:]
with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines(keepends=True)
header = re.compile(r'^\s*\[\[?\s*([^\]#]+?)\s*\]\]?\s*(?:#.*)?$')
for a in assigns:
    dotted, value = a.split('=', 1)
    section, key = dotted.rsplit('.', 1)
    kv = re.compile(r'^(\s*' + re.escape(key) + r'\s*=\s*)("(?:[^"\\\n]|\\.)*")(.*)$', re.S)
    esc = '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'
    table, done, sec_line = '', False, None
    for i, line in enumerate(lines):
        m = header.match(line)
        if m:
            table = m.group(1).replace(' ', '')
            if table == section:
                sec_line = i
            continue
        m = kv.match(line)
        if m and table == section:
            lines[i] = m.group(1) + esc + m.group(3)
            done = True
            break
    if not done:
        if sec_line is None:
            lines.append('\n[%s]\n%s = %s\n' % (section, key, esc))
        else:
            lines.insert(sec_line + 1, '%s = %s\n' % (key, esc))
with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(''.join(lines))
os.chmod(path + '.tmp', 0o600)
os.replace(path + '.tmp', path)
PY
}

# Print the string value of section.key in a TOML file (empty if absent).
get_toml_string() {
    local file=$1 dotted=$2
    root_cmd python3 - "$file" "$dotted" <<'PY'
import re, sys
path, dotted = sys.argv[1], sys.argv[2]
section, key = dotted.rsplit('.', 1)
try:
    import tomllib
except ImportError:
    tomllib = None
if tomllib is not None:
    with open(path, 'rb') as f:
        node = tomllib.load(f)
    for part in section.split('.'):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    value = node.get(key, '') if isinstance(node, dict) else ''
    sys.stdout.write(value if isinstance(value, str) else '')
    sys.exit(0)
header = re.compile(r'^\s*\[\[?\s*([^\]#]+?)\s*\]\]?\s*(?:#.*)?$')
kv = re.compile(r'^\s*' + re.escape(key) + r'\s*=\s*"([^"\\]*)"')
table = ''
with open(path, encoding='utf-8') as f:
    for line in f:
        m = header.match(line)
        if m:
            table = m.group(1).replace(' ', '')
            continue
        m = kv.match(line)
        if m and table == section:
            sys.stdout.write(m.group(1))
            break
PY
}

step "config $config"
command -v python3 >/dev/null 2>&1 || die "python3 is required"
if root_cmd test -f "$config"; then
    echo "config exists; leaving its content alone"
else
    env_pass=()
    if [[ ${#SUDO[@]} -gt 0 ]]; then
        env_pass=("--preserve-env=WECHAT_APPID,WECHAT_SECRET,OPENAI_API_KEY,APP_BASE_URL")
    fi
    run "${SUDO[@]}" "${env_pass[@]}" "$repo/scripts/setup-env.sh" "$config"
    set_toml_strings "$config" \
        "database.path=$state_dir/mvp28.db" \
        "storage.local_dir=$state_dir/objects"
fi
as_root chown root:"$svc_user" "$config"
as_root chmod 0640 "$config"

# ---------------------------------------------------------------- credentials
step "credential $cred_dir/jwt_secret (LoadCredential)"
if root_cmd test -s "$cred_dir/jwt_secret"; then
    echo "credential exists; leaving it alone"
elif [[ $dry_run -eq 1 ]]; then
    echo "+ write $cred_dir/jwt_secret (0600 root) = auth.jwt_secret from the config, or a fresh random secret"
else
    # Same secret as the config's (if any), so `serve` (which reads the credential)
    # and CLI commands run with only the config agree on it.
    secret=$(get_toml_string "$config" auth.jwt_secret)
    if [[ -z "$secret" ]]; then
        secret=$(openssl rand -hex 32 2>/dev/null || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    fi
    printf '%s' "$secret" | "${SUDO[@]}" install -m 0600 -o root -g root /dev/stdin "$cred_dir/jwt_secret"
    unset secret
    echo "wrote $cred_dir/jwt_secret"
fi

# ---------------------------------------------------------------- check + migrate
# The unit's EnvironmentFile=, for the steps below too.
env_args=()
if root_cmd test -f "$env_file" 2>/dev/null; then
    env_args=(--env-file "$env_file")
fi
step "config check"
if [[ $dry_run -eq 1 ]]; then
    as_service "$bin" --config "$config" "${env_args[@]}" config check
elif ! check_out=$(as_service "$bin" --config "$config" "${env_args[@]}" config check 2>&1); then
    printf '%s\n' "$check_out" >&2
    die "config check failed (output above, secrets redacted)"
else
    echo "config ok"
fi

step "migrate"
as_service "$bin" --config "$config" "${env_args[@]}" migrate

if [[ $doctor -eq 1 ]]; then
    step "doctor (skip with --no-doctor)"
    if ! as_service "$bin" --config "$config" "${env_args[@]}" doctor; then
        [[ $dry_run -eq 1 ]] || die "doctor found a problem (the fail lines above name the key to fix)"
    fi
fi

# ---------------------------------------------------------------- (re)start
step "systemd (re)start"
as_root systemctl daemon-reload
as_root systemctl enable --now mvp28
as_root systemctl restart mvp28

# ---------------------------------------------------------------- health
if [[ -n "${BASE_URL:-}" ]]; then
    base=${BASE_URL%/}
else
    bind=""
    if root_cmd test -r "$config" 2>/dev/null; then
        bind=$(get_toml_string "$config" server.bind 2>/dev/null || true)
    fi
    bind=${bind:-127.0.0.1:8080}
    host=${bind%:*}
    port=${bind##*:}
    case "$host" in
        0.0.0.0|"") host=127.0.0.1 ;;
        "[::]") host="[::1]" ;;
    esac
    base="http://$host:$port"
fi
url="$base/api/health"
step "health $url (up to ${health_timeout}s)"
if [[ $dry_run -eq 1 ]]; then
    echo "+ poll: curl -fsS $url"
    echo "deploy: dry run complete"
    exit 0
fi
deadline=$((SECONDS + health_timeout))
while :; do
    if body=$(curl -fsS --max-time 3 "$url" 2>/dev/null); then
        echo "$body"
        echo "deploy: mvp28 is up ($bin, config $config)"
        exit 0
    fi
    if (( SECONDS >= deadline )); then
        echo "deploy: $url did not answer 200 within ${health_timeout}s" >&2
        "${SUDO[@]}" systemctl --no-pager status mvp28 >&2 || true
        "${SUDO[@]}" journalctl --no-pager -u mvp28 -n 50 >&2 || true
        exit 1
    fi
    sleep 1
done
