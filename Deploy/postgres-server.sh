# Sourced by the measurement scripts: start_postgres DIR starts a throwaway PostgreSQL server
# with its data in DIR/data, listening on a free port on 127.0.0.1 with trust authentication
# for the postgres user, and sets postgres_pid and postgres_port. Default durability (fsync,
# synchronous commit). initdb and the server refuse to run as root: as root both run as the
# postgres user Debian's package creates. Stop it with: kill -INT "$postgres_pid".
start_postgres() {
    local dir=$1 bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed: run Deploy/bootstrap.sh" >&2; return 1; }
    mkdir -p "$dir"
    local as_postgres=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$dir" && chmod 700 "$dir"
        # The server must reach its folder: every folder above it needs search permission.
        local up=$dir
        while up=$(dirname "$up") && [ "$up" != / ]; do chmod o+x "$up"; done
        as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    fi
    "${as_postgres[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
    postgres_port=$(( 20000 + RANDOM % 20000 ))
    "${as_postgres[@]}" "$bin/postgres" -D "$dir/data" -p "$postgres_port" -k "$dir" -c listen_addresses=127.0.0.1 \
        -c max_connections=200 >"$dir/server.log" 2>&1 &
    postgres_pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$postgres_port") 2>/dev/null && break; sleep 0.1; done
    sleep 1
}
