"""fiovpn: the WireGuard VPN for a FoundriesFactory fleet."""

__version__ = "0.1.0"
