"""Feature: the programme's KPIs (``figures``: on-time, satisfaction, clocks, by dimension; the
live ``kpi`` frames) and the monthly report (``report``)."""
