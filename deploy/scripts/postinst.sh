#!/bin/sh
# Creates the tollgate system user and its data dir; the services are not
# started: the default configuration listens on loopback only and an
# operator enables the unit that fits (tollgate or tollgate@ROLE).
set -e

# rpm passes a count, dpkg an action: act on install and upgrade alike.
case "$1" in
abort-upgrade | abort-remove | abort-deconfigure) exit 0 ;;
esac

if ! getent group tollgate >/dev/null; then
	groupadd --system tollgate
fi
if ! getent passwd tollgate >/dev/null; then
	useradd --system --gid tollgate --home-dir /var/lib/tollgate --no-create-home \
		--shell /usr/sbin/nologin --comment "Tollgate" tollgate
fi

# The data dir holds the CA keys and the audit store: the service user only.
install -d -o tollgate -g tollgate -m 0700 /var/lib/tollgate

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
	# An upgrade restarts what was running, with the new binary.
	for unit in $(systemctl list-units --state=active --plain --no-legend 'tollgate.service' 'tollgate@*.service' | awk '{print $1}'); do
		systemctl try-restart "$unit" || true
	done
fi
exit 0
