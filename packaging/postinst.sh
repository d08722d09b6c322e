#!/bin/sh
# Let systemd see the new or changed unit; the service is not enabled or
# started here, since the example configuration must be edited first.
# Nothing to do when installing into another root (dpkg --root sets
# DPKG_ROOT) or on a system not booted with systemd.
set -e
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
