"""Lending: the pure domain (valuation, borrowing base, alert rules, detectors), the service layer,
API routers and the dashboard. The engine arrives with the lending-engine issue."""
