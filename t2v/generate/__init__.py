"""Generation: a face photo + speech -> a talking-head mp4 that keeps the photo's framing.

    t2v generate --image face.jpg --audio speech.wav --out talk.mp4 --checkpoint DIR
    report = run("face.jpg", "speech.wav", "talk.mp4", checkpoint="DIR")   # the same, from Python

The path, stage by stage (the names are the keys of `GenerationReport.stage_seconds`), and
the module that holds each piece:

  face            `inputs`: the photo's largest face or the one `face` numbers, left to right
                  (`t2v.landmarks`, the detector of data preparation); `crop`: the similarity crop of data preparation (`FaceCrop`)
                  at the renderer's size S; `models`: the renderer's reference, encoded once;
  audio_features  `inputs`: `t2v.audio.load_audio`, then `log_mel` (the one definition
                  training used) 30 s at a time (`log_mel_in_chunks`, equal to one pass);
  motion          `models`: the motion model (`KeypointGenerator`), chunk by chunk with the
                  prior's state carried across chunks: keypoints `[T, 68, 2]` in the crop's
                  pixels, T = `audio.num_video_frames(len(wave))` = round(25 x seconds) (with
                  `pose_from`, `tracking` of the source video's face is counted here too);
                  `blinks`: blinks added when the keypoints blink less than 10 times a minute;
  render          renderer "photo" (the default), `warp`: the photo's own face region warped
                  frame by frame along the keypoints at its size in the photo, mouth interior
                  and closing lids painted, pasted in place (`PhotoWarp`); renderer "learned",
                  `models`: `render_batch` frames per call of the trained renderer (`FaceRenderer`);
  paste_back      `paste` (renderer "learned"): each S x S face back into the photo through the
                  crop's inverse warp, blended with a feathered mask (`PasteBack`);
  encode          H.264 + AAC with the input audio (`t2v.video.VideoWriter`).

`generator` holds the whole path (`TalkingHeadGenerator`, `run`). Memory: the wave, its
log-mel and the keypoints are held whole (a few hundred kB per second of audio;
`max_seconds` caps the audio); pixels are streamed, so only one render batch of frames
exists at any time whatever the audio's length.

Outputs appear all together or not at all (`outputs`): the mp4, the keypoints (npz) and
the overlay video are written under hidden names beside their destinations and renamed
only when everything succeeded; an earlier file at a destination stays untouched on
failure. Bad input raises `t2v.errors.InputError`, one line naming the file.
"""

from t2v.generate.blinks import MIN_BLINKS_PER_MINUTE, add_blinks, blink_closure, close_lids, count_blinks
from t2v.generate.crop import FACE_CENTRE, FACE_SCALE, FaceCrop, canonical_face
from t2v.generate.generator import RENDERERS, GenerationReport, TalkingHeadGenerator, run
from t2v.generate.inputs import (DEFAULT_MAX_SECONDS, DETECT_MAX_SIDE, detect_faces, face_listing, find_face,
                                 largest_box, list_faces, log_mel_in_chunks, read_photo, read_speech)
from t2v.generate.models import FaceRenderer, KeypointGenerator
from t2v.generate.outputs import OVERLAY_SUFFIX, StagedOutputs, overlay_path
from t2v.generate.paste import MASK_CLEAR_RADIUS, MASK_OPAQUE_RADIUS, PasteBack, crop_mask
from t2v.generate.tracking import DETECT_EVERY, TRACK_DETECT_MAX_SIDE, ping_pong, source_motion, track_landmarks
from t2v.generate.warp import DEFAULT_MAX_FACE_PX, PhotoWarp, reflect_pad

__all__ = [
    "DEFAULT_MAX_FACE_PX", "MIN_BLINKS_PER_MINUTE", "PhotoWarp", "RENDERERS", "add_blinks", "blink_closure",
    "close_lids", "count_blinks", "face_listing", "list_faces", "reflect_pad",
    "DEFAULT_MAX_SECONDS", "DETECT_EVERY", "DETECT_MAX_SIDE", "FACE_CENTRE", "FACE_SCALE", "MASK_CLEAR_RADIUS",
    "MASK_OPAQUE_RADIUS", "OVERLAY_SUFFIX", "TRACK_DETECT_MAX_SIDE", "FaceCrop", "FaceRenderer", "GenerationReport",
    "KeypointGenerator", "PasteBack", "StagedOutputs", "TalkingHeadGenerator", "canonical_face", "crop_mask",
    "detect_faces", "find_face", "largest_box", "log_mel_in_chunks", "overlay_path", "ping_pong", "read_photo",
    "read_speech", "run", "source_motion", "track_landmarks",
]
