"""The read-only reports dashboard: a page served over HTTP whose figures all come from the
ReportService, so the dashboard can never disagree with the API."""
