"""Operating the server: Prometheus metrics, the dashboard and ``/api/status``
served by the daemon, and the live ``server status --watch``.

These modules read the daemon's state only through :class:`~fiovpn.ops.view.StatusView`;
they never write the interface, the firewall or the registry.
"""
