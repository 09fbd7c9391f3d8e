"""The lab's stand-in for fioconfig's VPN on-changed handler ``factory-config-vpn``.

It is a POSIX sh script, like the real one, and honours exactly the keys the
real one does:

- a missing ``wireguard-server`` or ``wireguard-client`` file, or ``enabled=0``
  in either, deletes the connection (the keyfile removed, ``nmcli conn
  reload``);
- both files are *sourced as shell*, the server's first, then the client's:
  a key in the client file overrides the server's (``enabled`` is cleared
  between the two);
- the keyfile is written from scratch: ``interface-name`` = the connection id,
  the private key from the device's key file, the server peer with
  ``endpoint``, ``persistent-keepalive=${keepalive-25}`` and
  ``allowed-ips=${server_address}``, ``address1=${address}`` without a prefix;
- then ``nmcli conn load FILE`` and ``nmcli conn up ID``.

Only the private key's path differs from a device (``/var/sota/wg-priv``): the
lab keeps it in the device's home.
"""

from __future__ import annotations

import shlex
from pathlib import Path

SECRETS_DIR = "/var/run/secrets"
DEVICE_PRIVATE_KEY = "/var/sota/wg-priv"
CONNECTIONS_DIR = "/etc/NetworkManager/system-connections"

_TEMPLATE = r"""#!/bin/sh -e
# lab stand-in for fioconfig's factory-config-vpn on-changed handler
conn="${VPN_ID-factory-vpn0}"
nmdir=@CONNECTIONS@
keyfile="$nmdir/${conn}.nmconnection"
secrets=@SECRETS@
private_key=@PRIVATE_KEY@

remove_connection() {
	if [ -f "$keyfile" ]; then
		rm -f "$keyfile"
		nmcli conn reload
	fi
}

for part in server client; do
	if [ ! -f "$secrets/wireguard-$part" ]; then
		echo "no wireguard-$part config"
		remove_connection
		exit 0
	fi
done

. "$secrets/wireguard-server"
if [ "$enabled" = "0" ]; then
	echo "VPN disabled for the factory"
	remove_connection
	exit 0
fi
server_pubkey="$pubkey"
unset enabled
. "$secrets/wireguard-client"
if [ "$enabled" = "0" ]; then
	echo "VPN disabled for this device"
	remove_connection
	exit 0
fi

remove_connection
umask 077
cat > "$keyfile" <<EOF
[connection]
id=${conn}
type=wireguard
interface-name=${conn}
permissions=

[wireguard]
private-key=$(cat "$private_key")

[wireguard-peer.${server_pubkey}]
endpoint=${endpoint}
persistent-keepalive=${keepalive-25}
allowed-ips=${server_address}

[ipv4]
address1=${address}
dns-search=
method=manual

[ipv6]
addr-gen-mode=stable-privacy
dns-search=
method=ignore
EOF
chmod 600 "$keyfile"
nmcli conn load "$keyfile"
nmcli conn up "$conn"
"""


def handler_script(*, private_key: Path | str = DEVICE_PRIVATE_KEY,
                   secrets_dir: str = SECRETS_DIR,
                   connections_dir: str = CONNECTIONS_DIR) -> str:
    """The handler script with the device's paths filled in."""
    return (_TEMPLATE.replace("@CONNECTIONS@", shlex.quote(connections_dir))
            .replace("@SECRETS@", shlex.quote(secrets_dir))
            .replace("@PRIVATE_KEY@", shlex.quote(str(private_key))))
