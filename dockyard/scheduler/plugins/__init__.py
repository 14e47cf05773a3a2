"""Scheduler plugins: one module per plugin, each with `NAME` and a `new(args, handle)` factory."""
