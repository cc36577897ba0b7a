"""The async engine: libvirt access, collection, rates and the hub. No UI, no SQL."""
