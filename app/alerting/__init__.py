"""Alerting straight from the metrics: rule state per deployment, silences, and the notification
pipeline that turns transitions into e-mails through an outbox that loses nothing."""
