"""libvirt access: the process-wide setup, connections and their pool, events, decoding."""
