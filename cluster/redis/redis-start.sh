#!/bin/sh
# Starts one Redis server of the raysys group from redis.conf (beside this script), appending
# what is secret or differs per server; the result goes to /run/redis/redis.conf, never to the
# data volume. `redis-start.sh --print` writes it to stdout instead of starting the server.
#
# Environment:
#   REDIS_PASSWORD   requirepass, and masterauth for replication (from the Secret / .env)
#   ANNOUNCE_HOST    this server's DNS name, as the other servers and the Sentinels reach it
#   GROUP_SERVERS    host:port of every server of the group, the primary of a first start first
#   GROUP_SENTINELS  host:port of every Sentinel
#
# The primary is the server the Sentinels name. When none answers (the group's first start, or
# no Sentinel up yet), a server whose volume holds an AOF waits for them up to 60 s, since it
# may have been demoted while it was away; then the first of GROUP_SERVERS is the primary and
# the others replicate it.
set -eu
mode=${1:-}
master=raysys
here=$(dirname "$0")
: "${REDIS_PASSWORD:?set REDIS_PASSWORD}" "${ANNOUNCE_HOST:?set ANNOUNCE_HOST}"
: "${GROUP_SERVERS:?set GROUP_SERVERS}" "${GROUP_SENTINELS:?set GROUP_SENTINELS}"
export REDISCLI_AUTH="$REDIS_PASSWORD"

# ask HOST:PORT COMMAND...: the reply's lines joined by spaces (nothing when none answers)
ask() {
    target=$1
    shift
    timeout 3 redis-cli -h "${target%:*}" -p "${target##*:}" --raw "$@" 2>/dev/null \
        | tr '\n' ' ' || true
}

# host:port of the primary the first answering Sentinel names (nothing when none does)
sentinels_primary() {
    for sentinel in $GROUP_SENTINELS; do
        # shellcheck disable=SC2046
        set -- $(ask "$sentinel" SENTINEL get-master-addr-by-name "$master")
        case "${2:-}" in '' | *[!0-9]*) continue ;; esac
        printf '%s:%s\n' "$1" "$2"
        return
    done
}

port=$(awk '$1 == "port" { print $2 }' "$here/redis.conf")
data=$(awk '$1 == "dir" { print $2 }' "$here/redis.conf")
primary=$(sentinels_primary)
if [ -z "$primary" ] && [ -d "$data/appendonlydir" ]; then
    deadline=$(($(date +%s) + 60))
    while [ -z "$primary" ] && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 3
        primary=$(sentinels_primary)
    done
fi
if [ -z "$primary" ]; then
    # shellcheck disable=SC2086
    set -- $GROUP_SERVERS
    primary=$1
fi

quoted=$(printf '%s' "$REDIS_PASSWORD" | sed 's/[\\"]/\\&/g')
config() {
    cat "$here/redis.conf"
    echo
    echo "# Added by redis-start.sh"
    printf 'requirepass "%s"\n' "$quoted"
    printf 'masterauth "%s"\n' "$quoted"
    printf 'replica-announce-ip %s\n' "$ANNOUNCE_HOST"
    if [ "$primary" != "$ANNOUNCE_HOST:$port" ]; then
        printf 'replicaof %s %s\n' "${primary%:*}" "${primary##*:}"
    fi
}

if [ "$mode" = "--print" ]; then
    config
    exit 0
fi
umask 077
mkdir -p /run/redis
config >/run/redis/redis.conf
exec redis-server /run/redis/redis.conf
