"""Collection: the collector's ticks, host samples, rates, history rings, per-VM details."""
