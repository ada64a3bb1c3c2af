#!/bin/sh
# Generate the secrets docker-compose.yml needs, once:
#
#   deploy/.env               POSTGRES_PASSWORD, GATEWAY_MQTT_PASSWORD, NOTIFIER_MQTT_PASSWORD
#                             (the API's alert publisher), JWT_SECRET (officers' tokens) and
#                             GRAFANA_ADMIN_PASSWORD (user admin of the monitoring dashboard), for
#                             `docker compose --env-file deploy/.env ...`
#   deploy/mosquitto/passwd   Mosquitto's password file, holding the gateway and notifier users
#                             (device users are added to it later, see deploy/README.md)
#
# Usage: sh deploy/make-credentials.sh [--force]
#
# Running it again changes nothing, except that a deploy/.env written before a secret existed gets
# that secret added (GRAFANA_ADMIN_PASSWORD). --force generates new passwords: the gateway's entry in the
# password file is replaced (device entries are kept), and the database password has to be
# changed in the running database too (the script prints how).
#
# Needs mosquitto_passwd (Debian/Ubuntu package `mosquitto`, Homebrew `mosquitto`); without
# it, the script runs mosquitto_passwd from the eclipse-mosquitto image when Docker is usable.

set -eu

GATEWAY_USER=pledgewatch-gateway
NOTIFIER_USER=pledgewatch-notifier
MOSQUITTO_IMAGE=${MOSQUITTO_IMAGE:-eclipse-mosquitto:2.0}

usage() {
    echo "usage: sh deploy/make-credentials.sh [--force]"
    echo "  writes deploy/.env and deploy/mosquitto/passwd; --force replaces existing passwords"
}

die() {
    echo "error: $*" >&2
    exit 1
}

force=0
for arg in "$@"; do
    case $arg in
        -f | --force) force=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "error: unknown argument: $arg" >&2
            usage >&2
            exit 2
            ;;
    esac
done

deploy_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
env_file=$deploy_dir/.env
passwd_dir=$deploy_dir/mosquitto
passwd_file=$passwd_dir/passwd

# Everything written here is a secret: owner-only from the start.
umask 077

# 48 hex characters (192 bits): safe inside a URL and an env file without quoting.
random_password() {
    if command -v openssl >/dev/null 2>&1; then
        pw=$(openssl rand -hex 24)
    else
        pw=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    fi
    case $pw in
        *[!0-9a-f]* | '') die "could not generate a random password" ;;
    esac
    [ ${#pw} -eq 48 ] || die "could not generate a random password"
    printf '%s\n' "$pw"
}

# mosquitto_passwd ARGS... with the password file's directory as $passwd_dir; prints which one.
run_mosquitto_passwd() {
    if command -v mosquitto_passwd >/dev/null 2>&1; then
        (cd "$passwd_dir" && mosquitto_passwd "$@")
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        echo "mosquitto_passwd not found; running it from $MOSQUITTO_IMAGE" >&2
        docker run --rm --user "$(id -u):$(id -g)" -v "$passwd_dir:/passwd-dir" \
            -w /passwd-dir "$MOSQUITTO_IMAGE" mosquitto_passwd "$@"
    else
        cat >&2 <<EOF
error: mosquitto_passwd is needed to write the broker's password file; nothing was written.
  Install it (Debian/Ubuntu: \`sudo apt-get install mosquitto\`, which ships it; the
  mosquitto-clients package does not. Homebrew: \`brew install mosquitto\`), or start Docker:
  this script then runs it from the $MOSQUITTO_IMAGE image, as
    docker run --rm --user "\$(id -u):\$(id -g)" -v "$passwd_dir:/passwd-dir" -w /passwd-dir \\
      $MOSQUITTO_IMAGE mosquitto_passwd -b [-c] passwd <user> <password>
  Then run this script again.
EOF
        exit 1
    fi
}

# Add or replace USER in the password file; create the file when it does not exist yet.
set_broker_password() {
    if [ -e "$passwd_file" ]; then
        run_mosquitto_passwd -b passwd "$1" "$2"
    else
        run_mosquitto_passwd -b -c passwd "$1" "$2"
    fi
    chmod 600 "$passwd_file"
}

env_value() {
    sed -n "s/^$1=//p" "$env_file" | tail -n 1
}

if [ -d "$passwd_file" ]; then
    die "$passwd_file is a directory (Docker creates one when the file is missing at start-up);" \
        "remove it and run this script again"
fi
mkdir -p "$passwd_dir"
chmod 700 "$passwd_dir"

# A deploy/.env from before the monitoring services: add the Grafana admin's password.
if [ -e "$env_file" ] && [ "$force" -eq 0 ] && [ -z "$(env_value GRAFANA_ADMIN_PASSWORD)" ]; then
    echo "GRAFANA_ADMIN_PASSWORD=$(random_password)" >>"$env_file"
    echo "added GRAFANA_ADMIN_PASSWORD to $env_file"
fi

if [ -e "$env_file" ] && [ "$force" -eq 0 ]; then
    if [ -s "$passwd_file" ]; then
        echo "$env_file and $passwd_file exist; nothing else changed (--force makes new passwords)."
        exit 0
    fi
    # The password file went missing: rebuild it from the passwords already in .env.
    gateway_password=$(env_value GATEWAY_MQTT_PASSWORD)
    [ -n "$gateway_password" ] || die "$env_file has no GATEWAY_MQTT_PASSWORD; use --force"
    set_broker_password "$GATEWAY_USER" "$gateway_password"
    notifier_password=$(env_value NOTIFIER_MQTT_PASSWORD)
    if [ -n "$notifier_password" ]; then
        set_broker_password "$NOTIFIER_USER" "$notifier_password"
    fi
    echo "wrote $passwd_file from the passwords in $env_file (which is unchanged)."
    echo "Add the device users again: see deploy/README.md."
    exit 0
fi

rotating=0
[ -e "$env_file" ] && rotating=1

postgres_password=$(random_password)
gateway_password=$(random_password)
notifier_password=$(random_password)
jwt_secret=$(random_password)
grafana_password=$(random_password)

# The broker file first: if mosquitto_passwd is missing, nothing has been written yet.
set_broker_password "$GATEWAY_USER" "$gateway_password"
set_broker_password "$NOTIFIER_USER" "$notifier_password"

tmp=$env_file.tmp.$$
trap 'rm -f "$tmp"' EXIT
{
    echo "# PledgeWatch production secrets, written by deploy/make-credentials.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)."
    echo "# Never commit this file. Use it as: docker compose --env-file deploy/.env ..."
    echo "POSTGRES_PASSWORD=$postgres_password"
    echo "GATEWAY_MQTT_PASSWORD=$gateway_password"
    echo "NOTIFIER_MQTT_PASSWORD=$notifier_password"
    echo "JWT_SECRET=$jwt_secret"
    echo "GRAFANA_ADMIN_PASSWORD=$grafana_password"
} >"$tmp"
chmod 600 "$tmp"
mv -f "$tmp" "$env_file"
trap - EXIT

echo "wrote $env_file"
echo "wrote $passwd_file (users $GATEWAY_USER, $NOTIFIER_USER)"
if [ "$rotating" -eq 1 ]; then
    echo
    echo "New passwords: an existing database keeps its old one and a running broker its old file;"
    echo "apply both as deploy/README.md (\"Rotating the passwords\") describes."
else
    cat <<EOF

Next: docker compose --env-file deploy/.env up -d --build
Devices: \`pledgewatch devices add <id> --tenant <tenant>\` prints a password; add it with
  mosquitto_passwd -b deploy/mosquitto/passwd <id> <password>
and reload the broker (deploy/README.md).
EOF
fi
