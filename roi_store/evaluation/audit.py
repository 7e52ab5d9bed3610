"""``audit``: exact duplicate clips across a store, so that no composite tests on a clip it trained on.

A clip ingested twice (the same folder under two subject names, or in two datasets) is found by
content: a sha256 over every region's frames of the clip, in region order, with each region's
shape. Two clips with equal digests have identical region frames, pixel for pixel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from roi_store.method.protocols import subject_of
from roi_store.store.store import Store

#: Clips read per batch (one region at a time): bounds the memory an audit holds.
BATCH = 32


def clip_digests(store: Store, progress: Callable[[int, int], None] | None = None) -> dict[str, str]:
    """``sha256:...`` of each complete clip's frames of every region.

    Parameters
    ----------
    store : Store
        The store to read.
    progress : callable, optional
        Called with (clips hashed, clips) after each batch of the last region.

    Returns
    -------
    dict
        Clip id -> digest.
    """
    ids = [c.id for c in store.clips]
    hashes = {i: hashlib.sha256() for i in ids}
    for r_i, region in enumerate(store.regions):
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            for clip_id, frames in zip(batch, store.clips_frames(batch, region)):
                frames = np.ascontiguousarray(frames)
                h = hashes[clip_id]
                h.update(f"{region}:{frames.dtype}:{frames.shape}".encode())
                h.update(frames.tobytes())
            if progress and r_i == len(store.regions) - 1:
                progress(min(start + BATCH, len(ids)), len(ids))
    return {i: "sha256:" + h.hexdigest() for i, h in hashes.items()}


def audit_store(store: Store, progress: Callable[[int, int], None] | None = None) -> dict:
    """Groups of clips of the store whose region frames are identical.

    Returns
    -------
    dict
        ``{"store", "clips", "duplicates": [{"digest", "clips", "subjects", "datasets",
        "same_subject", "views": {view: [clip ids in it]}}], "duplicate_clips"}``, groups in
        order of their first clip id. ``same_subject`` is false when the copies belong to
        different subjects: a LOSO fold may then train on the very clip it tests (list those
        subjects as one person with ``embed --same-person``, or drop a copy). ``views`` lists,
        per view, the copies it includes (where two or more are, a composite holds both).
    """
    clips = {c.id: c for c in store.clips}
    digests = clip_digests(store, progress)
    by_digest: dict[str, list[str]] = {}
    for clip_id, d in digests.items():
        by_digest.setdefault(d, []).append(clip_id)
    groups = []
    for d, members in by_digest.items():
        if len(members) < 2:
            continue
        members = sorted(members)
        subjects = sorted({subject_of(clips[m]) for m in members})
        views = {v: [m for m in members if clips[m].labels.get(v)] for v in store.views}
        groups.append({"digest": d, "clips": members, "subjects": subjects,
                       "datasets": sorted({clips[m].dataset for m in members}),
                       "same_subject": len(subjects) == 1,
                       "views": {v: m for v, m in views.items() if m}})
    groups.sort(key=lambda g: g["clips"][0])
    return {"store": store.where, "clips": len(clips), "duplicates": groups,
            "duplicate_clips": sum(len(g["clips"]) for g in groups)}


__all__ = ["audit_store", "clip_digests"]
