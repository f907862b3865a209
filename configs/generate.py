"""The knobs of `t2v generate` (a photo speaks); paths stay flags.

    t2v generate --image FACE --audio SPEECH --out OUT.mp4 --checkpoint DIR \
        --config.generate.temperature=0.7 --config.generate.render_batch=8

    t2v generate ... --config.generate.renderer=learned     # the trained renderer instead of the photo warp
    t2v generate --list-faces FACE                         # the photo's faces, numbered for --face

`--temperature`, `--seed`, `--max-seconds`, `--overlay` and `--face` are shorthands for these
fields; `--config.generate.x=y` overrides win over them. A None field means "the
default of t2v.generate.run" (the checkpoint's temperature, 600 s, a batch by size)
and, for the fields after `overlay`, is not passed at all.
"""

import ml_collections
from ml_collections import config_dict

from t2v.errors import InputError


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.generate = dict(
        temperature=config_dict.placeholder(float),   # of the motion prior; None: the checkpoint's sample.temperature
        seed=0,                                       # of the prior's samples: same seed, same video
        max_seconds=config_dict.placeholder(float),   # longer speech is refused; None: 600
        render_batch=config_dict.placeholder(int),    # frames per renderer call; None: 1 at >= 256 px, else 4
        overlay=False,                                # also write OUT_keypoints.mp4 with the keypoints drawn
        renderer=config_dict.placeholder(str),        # "photo" (warp the photo's own pixels) or "learned"; None: photo
        face=config_dict.placeholder(int),            # which face, 1, 2, ... left to right (--list-faces); None: largest
        add_blinks=config_dict.placeholder(bool),     # blinks when the keypoints blink < 10 a minute; None: yes
        max_face_px=config_dict.placeholder(float),   # "photo": warp drawn at most this face width; None: 512
    )
    if arg not in (None, ""):
        raise InputError(f"configs/generate.py: unknown variant {arg!r}")
    return c
