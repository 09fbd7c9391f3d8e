"""Adapters: one per outside system (files, processes, WireGuard, nft, SSH, the API)."""
