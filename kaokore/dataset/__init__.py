"""The dataset's own facts, before anything touches DIR or the network.

versions (the pinned registry) -> metadata (the five files checked and parsed into items:
text, labels, attributes) -> layout (where each item goes) and iiif (which URLs ask for the
same pixels); citation is the credit every description carries.
"""
