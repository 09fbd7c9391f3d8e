"""The command line: thin front ends over the services, one module per noun."""
