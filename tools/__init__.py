"""Command-line tools around the pipeline (preview sheets, sample files) and
process-wide settings that entry points apply (malloc)."""
