"""What a run keeps on disk: the SQLite archive (``archive``, its tables in ``schema``), each candidate's file in
the library format (``candidate_files``), the run-directory lock (``run_lock``), the cross-run cache of seed
results (``seed_cache``) and what reproduces a run (``provenance``)."""
