#!/bin/sh
# Starts one Sentinel of the raysys group from sentinel.conf (beside this script), with the
# monitored primary set to the current one, appending what is secret or differs per Sentinel.
# The result goes to sentinel.conf in the Sentinel's data directory, which Sentinel rewrites to
# remember failovers. `sentinel-start.sh --print` writes it to stdout instead.
#
# Environment: REDIS_PASSWORD, ANNOUNCE_HOST (this Sentinel's DNS name), GROUP_SERVERS and
# GROUP_SENTINELS, as for redis-start.sh. The Sentinels require the Redis password too (Ray's
# GCS logs in to a Sentinel with it) and log in to the servers as their default user with it
# (`sentinel auth-pass`; no `sentinel auth-user`).
#
# The primary: the one another Sentinel names; else the one this Sentinel's file named when it
# last ran; else the server that answers ROLE as a master; else the first of GROUP_SERVERS.
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

port=$(awk '$1 == "port" { print $2 }' "$here/sentinel.conf")
data=$(awk '$1 == "dir" { print $2 }' "$here/sentinel.conf")
state="$data/sentinel.conf"

primary=""
for sentinel in $GROUP_SENTINELS; do
    [ "$sentinel" = "$ANNOUNCE_HOST:$port" ] && continue
    # shellcheck disable=SC2046
    set -- $(ask "$sentinel" SENTINEL get-master-addr-by-name "$master")
    case "${2:-}" in '' | *[!0-9]*) continue ;; esac
    primary="$1:$2"
    break
done
if [ -z "$primary" ] && [ -f "$state" ]; then
    primary=$(awk -v m="$master" \
        '$1 == "sentinel" && $2 == "monitor" && $3 == m { print $4 ":" $5 }' "$state")
fi
if [ -z "$primary" ]; then
    for server in $GROUP_SERVERS; do
        # shellcheck disable=SC2046
        set -- $(ask "$server" ROLE)
        if [ "${1:-}" = "master" ]; then
            primary=$server
            break
        fi
    done
fi
if [ -z "$primary" ]; then
    # shellcheck disable=SC2086
    set -- $GROUP_SERVERS
    primary=$1
fi
myid=""
if [ -f "$state" ]; then
    myid=$(awk '$1 == "sentinel" && $2 == "myid" { print $3 }' "$state")
fi

quoted=$(printf '%s' "$REDIS_PASSWORD" | sed 's/[\\"]/\\&/g')
config() {
    awk -v m="$master" -v host="${primary%:*}" -v port="${primary##*:}" \
        '$1 == "sentinel" && $2 == "monitor" && $3 == m { $4 = host; $5 = port } { print }' \
        "$here/sentinel.conf"
    echo
    echo "# Added by sentinel-start.sh"
    printf 'requirepass "%s"\n' "$quoted"
    printf 'sentinel auth-pass %s "%s"\n' "$master" "$quoted"
    printf 'sentinel announce-ip %s\n' "$ANNOUNCE_HOST"
    if [ -n "$myid" ]; then
        printf 'sentinel myid %s\n' "$myid"
    fi
}

if [ "$mode" = "--print" ]; then
    config
    exit 0
fi
umask 077
config >"$state.new"
mv "$state.new" "$state"
exec redis-server "$state" --sentinel
