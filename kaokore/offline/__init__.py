"""The commands that read a downloaded tree without the network: verify, info, preview, and the
index the loaders (kaokore.torch, kaokore.tensorflow) share; overlap compares the versions.
"""
