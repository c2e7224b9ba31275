"""Integrations with other tools, built on the public API only.

Each module here (the console, OpenTelemetry, eventsourcing, Prometheus) uses nothing but
what ``eventstore_actors`` exports, so each could live in a package of its own.
"""
