"""``python -m convaudit``."""

from convaudit.cli import run

# Guarded: the worker processes of a local Dask cluster (--workers) are spawned, and a spawned
# process imports the main module again.
if __name__ == "__main__":
    run()
