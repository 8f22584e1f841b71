"""Where raw videos come from: manifests (CSV/JSONL rows) and the builders that write them from
a dataset's own annotations (HDTF, VFHQ, any folder)."""
