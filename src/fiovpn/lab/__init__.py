"""fiovpn.lab"""
