"""The live feed: one ``LiveHub`` per API process tails ``feed_events`` and streams it over /ws."""
