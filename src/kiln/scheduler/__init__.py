"""Cron schedules: parameters templated at fire time, each slot fired once into the queue,
retries, and the report delivered after the run (``kiln scheduler``, inside ``kiln serve``)."""
