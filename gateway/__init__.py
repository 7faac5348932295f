"""The gateway: latency-aware routing between edge and cloud, with a result cache."""
