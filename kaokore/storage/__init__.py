"""Everything under DIR: what it holds, and how it is read and written.

walk -> safefs / safewrite (no step through a link out of DIR) -> lock (one run at a time)
-> records, store, manifest (atomic images, manifest.csv, failures.csv, kaokore.json) ->
identify, directory, resolve, tree (which version and layout DIR holds, one model for every command).
"""
