"""The ``button_sidecar.v1`` protocol: modules generated from ``proto/`` by ``make proto``."""
