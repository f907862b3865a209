"""Offline data preparation: raw talking-head videos -> sharded ArrayRecord clip records.

    layouts.py    one parser per dataset layout: a directory tree -> `ClipSource`s
    landmarks.py  dlib face detection, 68 landmarks, main-face tracking, temporal smoothing
    align.py      similarity alignment to the canonical face and the 224 x 224 crop
    clip.py       one `ClipSource` -> one `t2v.data.records` record, or a skip reason
    builders.py   the TFDS builders, one per layout (ArrayRecord, no TensorFlow)
    beam.py       the same per-clip work as an Apache Beam transform
    prepare.py    `run(dataset, src, out)`: what `t2v prepare` calls

Imports `t2v.audio`, `t2v.keypoints`, `t2v.video` and `t2v.data.records`, never the
training code.
"""
