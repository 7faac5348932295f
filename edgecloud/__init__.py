"""edgecloud's shared core: protocol types, codec, validation, errors and status table, config,
dataplane and the gRPC server every part (edge agent, cloud worker, gateway) builds on."""

__version__ = "0.1.0"
