"""Per-deployment observability: StatsD mapping, Prometheus targets and rules, Grafana
dashboards, Elasticsearch log streams, FluentD and Alertmanager configuration.

Renderers here are pure; the targets that apply them call `app.integrations`.
"""
