#!/usr/bin/env bash
# Installs what the MQTT conformance tests need besides Go modules: Debian's
# mosquitto-clients (mosquitto_pub and mosquitto_sub), MQTT clients written
# independently of the Go libraries the other MQTT tests use. Safe to run
# again: it only installs when mosquitto_pub is missing.
set -euo pipefail

version() { dpkg-query -W -f='${Version}' mosquitto-clients 2>/dev/null || true; }

if command -v mosquitto_pub >/dev/null; then
  echo "mqtt_install.sh: mosquitto-clients $(version) already installed"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
  as_root=(sudo)
fi

echo "mqtt_install.sh: installing mosquitto-clients with apt-get"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients >/dev/null
echo "mqtt_install.sh: mosquitto-clients $(version) installed"
