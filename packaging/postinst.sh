#!/bin/sh
# Make the system user the service runs as (map646.service's User=), from
# /usr/lib/sysusers.d/map646.conf; into another root too (dpkg --root sets
# DPKG_ROOT). Without systemd-sysusers, adduser makes the same user on this
# system. Then let systemd see the new or changed unit; the service is not
# enabled or started here, since the example configuration must be edited
# first. Nothing to do there when installing into another root or on a
# system not booted with systemd.
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers ${DPKG_ROOT:+--root="$DPKG_ROOT"} map646.conf
elif [ -z "$DPKG_ROOT" ] && ! getent passwd map646 >/dev/null; then
	adduser --system --group --no-create-home --home /nonexistent --shell /usr/sbin/nologin \
		--gecos "map646 translator" map646 >/dev/null
fi
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
