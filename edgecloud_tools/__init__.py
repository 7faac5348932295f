"""edgecloud's developer and operator tools, kept out of the product packages: the ``edgecloud``
command (``cli``), ``up`` (the local stack), ``demo``, the stack launcher used by tests and
benchmarks (``stack``), the fault-injecting TCP proxy (``fault_proxy``) and the configuration
reference generator (``config_reference``). Each module is imported on its own; this package
exports nothing itself."""

__all__: list[str] = []
