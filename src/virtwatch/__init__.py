"""virtwatch: a terminal dashboard for KVM/libvirt hosts."""

__version__ = "0.1.0"
