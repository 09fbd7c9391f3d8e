"""fiovpn.sandbox"""
