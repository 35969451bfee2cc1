"""What DIR says about itself to other tools, kept true by every download.

listing (the images present, attributes.csv, the metadata.jsonl files) -> card (README.md),
croissant (croissant.json), fingerprint (one SHA-256 of the tree) -> write (all of it, and
nothing rewritten that did not change).
"""
