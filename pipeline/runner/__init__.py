"""The stage runner: resumable per-clip work with status records, over a process pool or a Ray
cluster, and the summary at the end."""
