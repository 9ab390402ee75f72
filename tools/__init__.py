"""Developer tools for the tcpstack project (not part of the installed package)."""
