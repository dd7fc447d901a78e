"""Adaptation methods: one module per method, each registered with `harness.api.register`."""
