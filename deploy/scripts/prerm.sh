#!/bin/sh
# Stops the services before their binary goes away; an upgrade restarts them
# in postinst instead.
set -e

case "$1" in
upgrade | 1) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	for unit in $(systemctl list-units --all --plain --no-legend 'tollgate.service' 'tollgate@*.service' | awk '{print $1}'); do
		systemctl disable --now "$unit" >/dev/null 2>&1 || true
	done
fi
exit 0
