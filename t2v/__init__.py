"""t2v: audio-driven talking heads in JAX/Flax, from one CPU core to a TPU/GPU slice."""

__version__ = "0.1.0"
