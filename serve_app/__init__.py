"""The HTTP and Python-handle front door of the lip-sync service (Ray Serve)."""
