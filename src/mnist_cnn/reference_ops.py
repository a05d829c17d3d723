"""Convolution, padding and max pooling written from the chapter's definitions, to read and to test against.

No torch convolution or pooling op is called: every output element is a sum (or max) over a window.
Like deep-learning libraries, the chapter's "convolution" is cross-correlation: the kernel is not flipped,
(k * f)[i] = sum_j k[j] f[i + j].

Padding: "valid" (none), "full" (m - 1 zeros on each side), "same" (output as long as the input, stride 1;
for an even kernel the extra zero goes at the end, i.e. right/bottom, as in torch's padding="same"),
an int (that many zeros on each side) or a (before, after) pair.
"""

import torch

Padding = str | int | tuple[int, int]


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def pad_amounts(kernel_size: int, padding: Padding, stride: int = 1) -> tuple[int, int]:
    """Zeros added (before, after) along one axis for a kernel of `kernel_size`."""
    if padding == "valid":
        return 0, 0
    if padding == "full":
        return kernel_size - 1, kernel_size - 1
    if padding == "same":
        if stride != 1:
            raise ValueError("padding='same' is defined for stride 1 only")
        total = kernel_size - 1
        return total // 2, total - total // 2
    if isinstance(padding, str):
        raise ValueError(f"padding must be 'valid', 'same', 'full', an int or a pair, got {padding!r}")
    before, after = _pair(padding, "padding")
    if before < 0 or after < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return before, after


def output_length(input_size: int, kernel_size: int, padding: Padding = "valid", stride: int = 1) -> int:
    """Length of a convolution's output along one axis: floor((n + pads - m) / stride) + 1."""
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if kernel_size <= 0:
        raise ValueError(f"kernel size must be positive, got {kernel_size}")
    before, after = pad_amounts(kernel_size, padding, stride)
    padded = input_size + before + after
    if kernel_size > padded:
        raise ValueError(f"kernel of size {kernel_size} is larger than the (padded) input of size {padded}")
    return (padded - kernel_size) // stride + 1


def _check_rank(tensor: torch.Tensor, rank: int, name: str) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions, got shape {tuple(tensor.shape)}")


def pad(tensor: torch.Tensor, amounts: list[tuple[int, int]]) -> torch.Tensor:
    """Zero-pad the last len(amounts) axes by (before, after) each."""
    leading = tensor.shape[: tensor.dim() - len(amounts)]
    sizes = [n + b + a for n, (b, a) in zip(tensor.shape[len(leading) :], amounts, strict=True)]
    padded = tensor.new_zeros((*leading, *sizes))
    window = tuple(slice(b, b + n) for n, (b, _) in zip(tensor.shape[len(leading) :], amounts, strict=True))
    padded[(..., *window)] = tensor
    return padded


def conv1d(signal: torch.Tensor, kernel: torch.Tensor, padding: Padding = "valid", stride: int = 1) -> torch.Tensor:
    """(k * f)[i] = sum_j k[j] f[i*stride + j] over a zero-padded 1-D signal; length n - m + 1 for 'valid'."""
    _check_rank(signal, 1, "signal")
    _check_rank(kernel, 1, "kernel")
    m = kernel.shape[0]
    length = output_length(signal.shape[0], m, padding, stride)
    padded = pad(signal, [pad_amounts(m, padding, stride)])
    return torch.stack([(kernel * padded[i * stride : i * stride + m]).sum() for i in range(length)])


def conv2d(
    image: torch.Tensor, kernel: torch.Tensor, padding: Padding = "valid", stride: int | tuple[int, int] = 1
) -> torch.Tensor:
    """Single-channel 2-D convolution of an h x w image with an m1 x m2 kernel (padding applies to both axes)."""
    _check_rank(image, 2, "image")
    _check_rank(kernel, 2, "kernel")
    return conv2d_multichannel(image[None], kernel[None, None], padding=padding, stride=stride)[0]


def conv2d_multichannel(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: Padding = "valid",
    stride: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """c_in x h x w input, c_out x c_in x m1 x m2 weight -> c_out x h' x w'.

    out[o, i, j] = bias[o] + sum over c, a, b of weight[o, c, a, b] * input[c, i*s1 + a, j*s2 + b]
    """
    _check_rank(inputs, 3, "input")
    _check_rank(weight, 4, "weight")
    if weight.shape[1] != inputs.shape[0]:
        raise ValueError(f"weight expects {weight.shape[1]} input channels, the input has {inputs.shape[0]}")
    s1, s2 = _pair(stride, "stride")
    (m1, m2), (h, w) = weight.shape[2:], inputs.shape[1:]
    rows, cols = output_length(h, m1, padding, s1), output_length(w, m2, padding, s2)
    padded = pad(inputs, [pad_amounts(m1, padding, s1), pad_amounts(m2, padding, s2)])
    out = inputs.new_zeros(weight.shape[0], rows, cols)
    for i in range(rows):
        for j in range(cols):
            window = padded[:, i * s1 : i * s1 + m1, j * s2 : j * s2 + m2]
            out[:, i, j] = (weight * window).sum(dim=(1, 2, 3))
    return out if bias is None else out + bias[:, None, None]


def max_pool2d(
    inputs: torch.Tensor, window: int | tuple[int, int], stride: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Max over each window of an h x w (or c x h x w) tensor; the stride defaults to the window size."""
    if inputs.dim() not in (2, 3):
        raise ValueError(f"input must be h x w or c x h x w, got shape {tuple(inputs.shape)}")
    k1, k2 = _pair(window, "window")
    s1, s2 = _pair(window if stride is None else stride, "stride")
    rows = output_length(inputs.shape[-2], k1, "valid", s1)
    cols = output_length(inputs.shape[-1], k2, "valid", s2)
    out = inputs.new_empty((*inputs.shape[:-2], rows, cols))
    for i in range(rows):
        for j in range(cols):
            out[..., i, j] = inputs[..., i * s1 : i * s1 + k1, j * s2 : j * s2 + k2].amax(dim=(-2, -1))
    return out
