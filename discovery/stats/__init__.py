"""What multi-seed scores mean: the statistics (``statistics``: mean, Student-t intervals, paired differences
and verdicts) and the typed record a row stores (``seed_stats``: ``SeedStats``, ``PairedStats``, the
aggregation of seed runs into one row). Pure: the archive reads these types and scoring writes them."""
