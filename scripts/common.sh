# Shared by scripts/demo.sh and scripts/test.sh: build, install, and pick the
# unprivileged user that runs the throwaway clusters.
PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BIN/pg_config
export PATH="$PG_BIN:$PATH"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Build warning-free with the server's flags, then install into the server.
eb_build_install() {
    bash "$REPO/scripts/install-deps.sh"
    make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
    make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" COPT=-Werror
    if [ "$(id -u)" -eq 0 ]; then
        make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
    else
        sudo make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
    fi
}

# Postgres refuses to run as root: use an unprivileged user for clusters.
EB_USER=${EB_USER:-}
eb_pick_user() {
    if [ "$(id -u)" -ne 0 ]; then
        EB_USER=$(id -un)
        return
    fi
    EB_USER=eventbus
    id "$EB_USER" >/dev/null 2>&1 ||
        useradd --system --home-dir /nonexistent --no-create-home --shell /bin/bash "$EB_USER"
}

# Run a command as that user (from a directory it can enter).
eb_as_user() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd /tmp && runuser -u "$EB_USER" -- env PATH="$PATH" "$@")
    else
        "$@"
    fi
}

# Create and start a throwaway cluster in DIR/data listening only on a Unix
# socket in DIR, on PORT, with event_bus preloaded; more postgresql.conf
# lines may come on standard input.  Its log is DIR/server.log.
eb_start_cluster() {
    local dir=$1 port=$2
    eb_as_user initdb -D "$dir/data" -A trust -U postgres >/dev/null
    {
        echo "shared_preload_libraries = 'event_bus'"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        echo "port = $port"
        [ -t 0 ] || cat
    } >> "$dir/data/postgresql.conf"
    eb_as_user pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}
