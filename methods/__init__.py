"""Adaptation methods: one module per method, each registered with `harness.api.register`."""

HARNESS_METHODS = True   # tells the registry this is the harness's `methods`, not another package so named
