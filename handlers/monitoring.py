"""Monitoring: the Prometheus scrape (see jan_server.web.metrics)."""

from jan_server.web import metrics


def get_metrics():
    return metrics.response()
