#!/usr/bin/env bash
# The Debian packages the sandbox is built and run with, checked by the files themselves (a stamp
# would hide a package removed since): installs what is missing as root, else prints the command.
#   scripts/system-packages.sh                  check, and install what is missing
#   scripts/system-packages.sh --package-for F  the package that provides file F (e.g. mosquitto.h)
set -euo pipefail

# file the build or the sandbox uses : Debian package that provides it (`dpkg -S <file>`)
NEEDS=(
  /usr/sbin/mosquitto:mosquitto                       # the sandbox's MQTT broker
  /usr/include/mosquitto_broker.h:mosquitto-dev       # broker plugin API (sandbox/iot_data_plane/broker_plugin/)
  /usr/include/mosquitto_plugin.h:mosquitto-dev
  /usr/include/mosquitto.h:libmosquitto-dev           # MOSQ_ERR_* and the client API types the plugin API uses
  /usr/include/openssl/x509.h:libssl-dev              # the plugin reads the client certificate (and -lcrypto)
  /usr/include/stdio.h:libc6-dev
  /usr/bin/gcc:gcc                                    # builds the plugin
  /usr/sbin/update-ca-certificates:ca-certificates    # python -m sandbox trust / untrust
)

if [ "${1:-}" = --package-for ]; then
  for need in "${NEEDS[@]}"; do
    file=${need%%:*}
    case "$file" in */"${2:?a file name}" | "$2") echo "${need##*:}"; exit 0 ;; esac
  done
  exit 1
fi

missing=()
for need in "${NEEDS[@]}"; do
  file=${need%%:*} package=${need##*:}
  if [ ! -e "$file" ] && [[ " ${missing[*]-} " != *" $package "* ]]; then missing+=("$package"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

command="apt-get install -y ${missing[*]}"
if ! command -v apt-get >/dev/null; then
  echo "setup: missing system packages (Debian names): ${missing[*]}. Install them with your package manager." >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing system packages: ${missing[*]}. Install them as root, then run make again:" >&2
  echo "  sudo apt-get update && sudo $command" >&2
  exit 1
fi
echo "setup: installing ${missing[*]} (apt-get)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
for need in "${NEEDS[@]}"; do
  if [ ! -e "${need%%:*}" ]; then
    echo "setup: ${need%%:*} is still missing after installing ${need##*:}" >&2
    exit 1
  fi
done
