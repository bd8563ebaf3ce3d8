"""Feature: which agency does the work — categories (Open311 services), agency per category and
ward, deadlines in the working calendar, which alerts open incidents (``table``)."""
