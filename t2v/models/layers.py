"""Small layers shared by the models, each parameter named with logical axes.

Logical axis names (a config's rule table maps them onto the mesh):
  "embed"     the model width of a stream of features;
  "mlp"       the hidden width inside a block;
  "heads", "kv"  attention heads and the per-head width;
  "channels"  raw or odd-sized feature dims (mel bins, keypoint coordinates,
              concatenated inputs, latents) that are normally left unsharded.
Convolution kernels are `(None, in_axis, out_axis)` (1D) or `(None, None, in_axis, out_axis)`
(2D): the taps are never sharded.

Every layer takes `dtype` (compute) and `param_dtype` (storage, float32). Beside them sit
the parameter-free image helpers the renderer and the discriminator share (`upsample`,
`downsample`, `depth_to_space`, `leaky_relu`).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2v import parallel

Dtype = jnp.dtype | type
Axes = tuple[str | None, ...]

default_kernel_init = nn.initializers.lecun_normal()


def _distinct(axis_in: str | None, axis_out: str | None) -> Axes:
    """Kernel axes with no name twice (a mesh axis can shard only one dim): drop the input's."""
    return (None if axis_in == axis_out else axis_in, axis_out)


def dense(
    features: int,
    axes: Axes = ("embed", "mlp"),
    *,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    kernel_init: Callable = default_kernel_init,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Dense:
    """`nn.Dense` whose kernel is `[in, out]` with logical axes `axes` and bias `[out]`."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(kernel_init, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[-1:]),
        name=name,
    )


class MultiAxisDense(nn.Module):
    """`[..., *in_dims] -> [..., *features]`: a dense layer over several trailing axes.

    The kernel `[*in_dims, *features]` carries the logical axes `axes` (one per kernel dim)
    and is created at that shape, with the fan-in of all of `in_dims`. Flax's
    `nn.DenseGeneral` creates it flat and reshapes it after boxing, so under a global mesh
    the box's sharding constraint meets the flat rank and fails (in init and apply).
    """

    features: tuple[int, ...]
    axes: Axes
    in_dims: int = 1  # how many trailing input axes are contracted
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = tuple(self.features)
        kernel_shape = (*x.shape[x.ndim - self.in_dims:], *features)
        if len(self.axes) != len(kernel_shape):
            raise ValueError(f"MultiAxisDense {self.name}: {len(self.axes)} logical axes {self.axes} "
                             f"for a kernel of shape {kernel_shape}")
        contracted = tuple(range(self.in_dims))
        init = nn.initializers.lecun_normal(in_axis=contracted,
                                            out_axis=tuple(range(self.in_dims, len(kernel_shape))))
        kernel = self.param("kernel", nn.with_logical_partitioning(init, tuple(self.axes)), kernel_shape,
                            self.param_dtype)
        y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.in_dims)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                   tuple(self.axes[self.in_dims:])),
                              features, self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


def _gathered_conv(lhs, rhs, *args, kernel_axes: Axes, **kwargs):
    """`lax.conv_general_dilated` with the kernel gathered over the batch mesh axes first
    (`parallel.gathered_for_compute`: the FSDP layout for compute, and a way around an XLA
    partitioning bug in the convolution's gradient)."""
    return jax.lax.conv_general_dilated(lhs, parallel.gathered_for_compute(rhs, kernel_axes), *args, **kwargs)


def conv1d(
    features: int,
    kernel_size: int,
    axes: Axes = ("embed", "mlp"),
    *,
    stride: int = 1,
    dilation: int = 1,
    padding: tuple[int, int],
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """Temporal convolution over `[batch, time, in]` with explicit `(left, right)` padding.

    Explicit padding (not "SAME") keeps the alignment between input and output frames
    independent of the sequence length, which chunked processing relies on.
    """
    return nn.Conv(
        features,
        kernel_size=(kernel_size,),
        strides=(stride,),
        kernel_dilation=(dilation,),
        padding=[padding],
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(default_kernel_init, (None, *axes)),
        conv_general_dilated=partial(_gathered_conv, kernel_axes=(None, *axes)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[-1:]),
        name=name,
    )


def conv2d(
    features: int,
    kernel_size: int = 3,
    axes: tuple[str | None, str | None] = ("embed", "mlp"),
    *,
    stride: int = 1,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    kernel_init: Callable = default_kernel_init,
    bias_init: Callable = nn.initializers.zeros_init(),
    name: str | None = None,
) -> nn.Conv:
    """A "SAME" 2D convolution over `[batch, H, W, in]`, kernel axes `(None, None, in, out)`
    (an input axis named like the output is left unnamed)."""
    return nn.Conv(
        features,
        kernel_size=(kernel_size, kernel_size),
        strides=(stride, stride),
        padding="SAME",
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(kernel_init, (None, None, *_distinct(*axes))),
        conv_general_dilated=partial(_gathered_conv, kernel_axes=(None, None, *_distinct(*axes))),
        bias_init=nn.with_logical_partitioning(bias_init, axes[-1:]),
        name=name,
    )


def conv_padding(kernel_size: int, dilation: int = 1, *, causal: bool = False) -> tuple[int, int]:
    """`(left, right)` zero padding that keeps a stride-1 convolution's length."""
    span = dilation * (kernel_size - 1)
    return (span, 0) if causal else (span // 2, span - span // 2)


def layer_norm(axis: str = "embed", *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis,)),
        name=name,
    )


def leaky_relu(x):
    """LeakyReLU with slope 0.2, the image networks' activation (pix2pixHD, FOMM)."""
    return nn.leaky_relu(x, 0.2)


def upsample(x):
    """Nearest-neighbour x2 upsampling of `[batch, H, W, C]`."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample(x, factor: int):
    """Average pooling by `factor` of `[batch, H, W, C]` (H and W divide by it)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def depth_to_space(x):
    """`[batch, H, W, 4C]` -> `[batch, 2H, 2W, C]`: each pixel's channels become its 2x2 block
    (the sub-pixel convolution's shuffle)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, 2 * h, 2 * w, c // 4)


class MLP(nn.Module):
    """Per-position MLP `[..., in] -> [..., out_features]` with GELU between layers.

    The first kernel reads `in_axis` (use "channels" for concatenated inputs of odd
    width); hidden kernels alternate ("embed", "mlp") / ("mlp", "embed") so tensor
    parallelism splits consecutive layers on opposite sides; the output axis is `out_axis`
    (a kernel whose two axes would share a name leaves its input axis unnamed).
    `out_scale` scales the output layer's initial weights (0 gives a zero-initialised
    head, useful for residual outputs that should start at the identity).
    """

    hidden_features: Sequence[int]
    out_features: int
    in_axis: str | None = "channels"
    out_axis: str | None = "channels"
    out_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        axis_in = self.in_axis
        for i, width in enumerate(self.hidden_features):
            axis_out = "mlp" if i % 2 == 0 else "embed"
            x = dense(width, _distinct(axis_in, axis_out), dtype=self.dtype, param_dtype=self.param_dtype,
                      name=f"hidden_{i}")(x)
            x = nn.gelu(x)
            axis_in = axis_out
        if self.out_scale == 0.0:
            out_init = nn.initializers.zeros_init()
        else:
            out_init = nn.initializers.variance_scaling(self.out_scale**2, "fan_in", "truncated_normal")
        return dense(self.out_features, _distinct(axis_in, self.out_axis), dtype=self.dtype,
                     param_dtype=self.param_dtype, kernel_init=out_init, name="out")(x)


class FeedForward(nn.Module):
    """Transformer feed-forward `[..., embed] -> [..., embed]` (embed -> mlp -> embed)."""

    hidden_features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = dense(self.hidden_features, ("embed", "mlp"), dtype=self.dtype, param_dtype=self.param_dtype,
                  name="up")(x)
        x = nn.gelu(x)
        return dense(width, ("mlp", "embed"), dtype=self.dtype, param_dtype=self.param_dtype, name="down")(x)


class TemporalConvBlock(nn.Module):
    """Pre-LN residual dilated convolution block `[batch, time, embed] -> same shape`.

    LN -> conv(kernel, dilation) to the hidden width -> GELU -> dense back -> + input.
    Each block sees `dilation * (kernel_size - 1) // 2` frames either side (all on the
    left when causal); `receptive_field` gives the exact figures.
    """

    hidden_features: int
    kernel_size: int = 3
    dilation: int = 1
    causal: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.nowrap
    def receptive_field(self) -> tuple[int, int]:
        """Frames `(before, after)` that one output frame depends on."""
        return conv_padding(self.kernel_size, self.dilation, causal=self.causal)

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        y = layer_norm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        y = conv1d(self.hidden_features, self.kernel_size, ("embed", "mlp"), dilation=self.dilation,
                   padding=self.receptive_field(), dtype=self.dtype, param_dtype=self.param_dtype,
                   name="conv")(y)
        y = nn.gelu(y)
        y = dense(width, ("mlp", "embed"), dtype=self.dtype, param_dtype=self.param_dtype, name="out")(y)
        return x + y
