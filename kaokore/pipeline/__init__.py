"""The download, stage by stage: `run.download` sequences them.

plan (what is good on disk, what moves, what to fetch; reuse) -> fetch (workers, scheduler and
hosts, session, attempt, transport) -> normalize (256x256 RGB JPEG) -> the store (kaokore.storage)
-> report (progress, summary). records holds what the stages share.
"""
