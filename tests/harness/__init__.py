"""Test harness that runs real components (PostgreSQL, Prometheus, Elasticsearch, ...).

Tests talk to real servers wherever one can be had on our machines; this package finds their
binaries, starts them on 127.0.0.1 with data in scratch folders and stops them afterwards.
`tests.harness.plugin` exposes them as pytest fixtures; scripts/install-test-deps.sh installs them.
"""
