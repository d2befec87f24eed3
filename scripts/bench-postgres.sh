# Sourced by scripts/bench.sh after its SQLite chat phase: chat on the
# Postgres backend with one and with two instances on one database, on a
# throwaway cluster started here (Debian's postgresql; fsync on, as a real
# deployment). Sets RPS_chat_pg1, RPS_chat_pg2 (sum of both instances),
# P99_chat_pg1, PG_NOTE. Uses run(), chat_script(), BIN, WORK, PORT, CONNS,
# THREADS.

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
RPS_chat_pg1="" RPS_chat_pg2="" P99_chat_pg1="" PG_NOTE=""
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  PG_NOTE="skipped: no PostgreSQL (apt-get install postgresql)"
  echo " Postgres: $PG_NOTE"
  return 0 2>/dev/null || exit 0
fi
# its own directory: the postgres user cannot enter the bench's mktemp dir
PG_DIR="$(mktemp -d /tmp/mvp28-bench-pg.XXXXXX)"
chmod 755 "$PG_DIR"
PG_PORT=$((PORT + 20))
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PG_DIR"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
pg_stop() {
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}

pg_chat() { # instances; sets RPS_chat_pgN
  local n="$1" db="bench$1" pids="" i port
  as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE $db" >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db"
  "$BIN" migrate >/dev/null
  "$BIN" admin set-free-quota 1000000000 >/dev/null
  for i in $(seq 1 "$n"); do
    port=$((PORT + 20 + i))
    MVP28_SERVER__BIND="127.0.0.1:$port" "$BIN" serve 2>>"$WORK/server-pg.log" &
    pids="$pids $!"
    until curl -fsS "http://127.0.0.1:$port/api/health" >/dev/null 2>&1; do sleep 0.01; done
  done
  chat_script "http://127.0.0.1:$((PORT + 21))" "$WORK/chat-pg.lua"
  if [ "$n" = 1 ]; then
    run chat_pg1 "http://127.0.0.1:$((PORT + 21))/api/chat" "$WORK/chat-pg.lua"
  else
    # one wrk per instance, half the connections each (what a balancer does)
    local half=$((CONNS / n)) total=0 r wpids=""
    for i in $(seq 1 "$n"); do
      wrk -t1 -c"$half" -d"${DURATION}s" --latency -s "$WORK/chat-pg.lua" \
        "http://127.0.0.1:$((PORT + 20 + i))/api/chat" > "$WORK/chat_pg${n}_$i.out" &
      wpids="$wpids $!"
    done
    wait $wpids
    for i in $(seq 1 "$n"); do
      r=$(awk '/Requests\/sec/ {print $2}' "$WORK/chat_pg${n}_$i.out")
      total=$(python3 -c "print(round(${total} + ${r:-0}, 2))")
    done
    printf '  %-12s %-24s %10s req/s   (%d instances, one wrk each)\n' "chat_pg$n" "/api/chat" "$total" "$n"
    eval "RPS_chat_pg$n=$total"
  fi
  for p in $pids; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  unset DATABASE_URL
}

echo " Postgres $("$PG_BIN/postgres" --version | awk '{print $3}') on this machine (fsync on):"
pg_chat 1
pg_chat 2
pg_stop
