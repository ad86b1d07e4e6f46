"""Getting events into the ledger from files: readers per format, the loader, the tailer, and
the credentials a command sends them with."""
