#!/usr/bin/env bash
# Installs the gateway on a Raspberry Pi OS / Debian machine as a systemd service.
# Run as root from a checkout: sudo bash systemd/install.sh
# Idempotent: running it again upgrades the code and keeps config and data.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/bedside-gateway
CONF=/etc/bedside-gateway

[ "$(id -u)" = 0 ] || { echo "run as root (sudo)"; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv bluez >/dev/null

id bedside >/dev/null 2>&1 || useradd --system --home-dir /var/lib/bedside-gateway \
  --shell /usr/sbin/nologin --groups bluetooth,dialout bedside

mkdir -p "$PREFIX" "$CONF"
rm -rf "$PREFIX/src" && cp -r "$SRC" "$PREFIX/src" && rm -rf "$PREFIX/src/.venv" "$PREFIX/src/.git"
rm -rf "$PREFIX/docs" && cp -r "$SRC/docs" "$PREFIX/docs"
[ -d "$PREFIX/venv" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet "$PREFIX/src"

if [ ! -f "$CONF/gateway.toml" ]; then
  cp "$SRC/examples/gateway.toml" "$CONF/gateway.toml"
  echo "edit $CONF/gateway.toml (gateway id, township, broker, devices), then:"
  echo "  systemctl restart bedside-gateway"
fi
# The config may hold door-sensor keys: readable by the service, no one else.
chown -R root:bedside "$CONF" && chmod 0750 "$CONF" && chmod 0640 "$CONF/gateway.toml"

install -m 0644 "$SRC/systemd/bedside-gateway.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable bedside-gateway.service
if ! "$PREFIX/venv/bin/bedside-gateway" check-config "$CONF/gateway.toml"; then
  echo "fix $CONF/gateway.toml, then: systemctl restart bedside-gateway"
  exit 1
fi
systemctl restart bedside-gateway
systemctl --no-pager status bedside-gateway | head -5 || true
