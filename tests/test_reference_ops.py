"""The first-principles operations against torch.nn.functional on random cases, and against hand-worked ones."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_cnn.reference_ops import conv1d, conv2d, conv2d_multichannel, max_pool2d, output_length, pad_amounts

CASES = settings(max_examples=150, deadline=None)


def random_tensor(draw, *shape: int) -> torch.Tensor:
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def torch_conv(conv, inputs: torch.Tensor, weight: torch.Tensor, padding, stride, bias=None) -> torch.Tensor:
    """torch's own convolution, with the padding spelled the torch way (independent of `pad_amounts`)."""
    if isinstance(padding, tuple):  # (before, after) on every spatial axis: torch's conv takes symmetric only
        inputs = F.pad(inputs, padding * (inputs.dim() - 2))
        padding = 0
    elif padding == "full":
        padding = weight.shape[-1] - 1 if weight.dim() == 3 else (weight.shape[-2] - 1, weight.shape[-1] - 1)
    return conv(inputs, weight, bias, stride=stride, padding=padding)


paddings = st.one_of(
    st.sampled_from(["valid", "same", "full"]), st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3))
)


@st.composite
def conv1d_cases(draw):
    m = draw(st.integers(1, 6))
    padding = draw(paddings)
    stride = 1 if padding == "same" else draw(st.integers(1, 3))
    before, after = pad_amounts(m, padding, stride)
    n = draw(st.integers(max(1, m - before - after), 20))
    return random_tensor(draw, n), random_tensor(draw, m), padding, stride


SAME_EVEN_WARNING = "ignore:Using padding='same' with even kernel"


@given(conv1d_cases())
@CASES
@pytest.mark.filterwarnings(SAME_EVEN_WARNING)
def test_conv1d_matches_torch(case) -> None:
    signal, kernel, padding, stride = case
    expected = torch_conv(F.conv1d, signal[None, None], kernel[None, None], padding, stride)[0, 0]
    ours = conv1d(signal, kernel, padding, stride)
    torch.testing.assert_close(ours, expected)
    assert ours.shape[0] == output_length(signal.shape[0], kernel.shape[0], padding, stride)


@st.composite
def conv2d_cases(draw):
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    m1, m2 = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    padding = draw(paddings)
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    (b1, a1), (b2, a2) = pad_amounts(m1, padding, stride[0]), pad_amounts(m2, padding, stride[1])
    h, w = draw(st.integers(max(1, m1 - b1 - a1), 9)), draw(st.integers(max(1, m2 - b2 - a2), 9))
    inputs, weight, bias = random_tensor(draw, c_in, h, w), random_tensor(draw, c_out, c_in, m1, m2), None
    if draw(st.booleans()):
        bias = random_tensor(draw, c_out)
    return inputs, weight, bias, padding, stride


@given(conv2d_cases())
@CASES
@pytest.mark.filterwarnings(SAME_EVEN_WARNING)
def test_multichannel_conv2d_matches_torch(case) -> None:
    inputs, weight, bias, padding, stride = case
    expected = torch_conv(F.conv2d, inputs[None], weight, padding, stride, bias)[0]
    torch.testing.assert_close(conv2d_multichannel(inputs, weight, bias, padding, stride), expected)


@given(conv2d_cases())
@CASES
def test_single_channel_conv2d_is_the_one_channel_case(case) -> None:
    inputs, weight, _, padding, stride = case
    expected = conv2d_multichannel(inputs[:1], weight[:1, :1], None, padding, stride)[0]
    torch.testing.assert_close(conv2d(inputs[0], weight[0, 0], padding, stride), expected)


@st.composite
def pool_cases(draw):
    k1, k2 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    shape = (draw(st.integers(1, 3)), draw(st.integers(k1, 10)), draw(st.integers(k2, 10)))
    return random_tensor(draw, *shape), (k1, k2), stride


@given(pool_cases())
@CASES
def test_max_pool2d_matches_torch(case) -> None:
    inputs, window, stride = case
    expected = F.max_pool2d(inputs[None], window, stride=stride)[0]
    torch.testing.assert_close(max_pool2d(inputs, window, stride), expected)


def test_hand_computed_1d() -> None:
    f, k = torch.tensor([1.0, 2, 3, 4, 5]), torch.tensor([1.0, 0, -1])
    assert conv1d(f, k).tolist() == [-2, -2, -2]  # 1-3, 2-4, 3-5
    assert conv1d(f, k, "same").tolist() == [-2, -2, -2, -2, 4]  # zero before and after
    assert conv1d(f, k, "full").tolist() == [-1, -2, -2, -2, -2, 4, 5]
    assert conv1d(f, k, stride=2).tolist() == [-2, -2]
    assert conv1d(f, torch.tensor([1.0, 1]), "same").tolist() == [3, 5, 7, 9, 5]  # even kernel: extra zero at the end


def test_hand_computed_2d_and_pooling() -> None:
    image = torch.arange(9.0).reshape(3, 3)  # 0 1 2 / 3 4 5 / 6 7 8
    assert conv2d(image, torch.ones(2, 2)).tolist() == [[8, 12], [20, 24]]
    assert conv2d(image, torch.tensor([[1.0, -1]])).tolist() == [[-1, -1], [-1, -1], [-1, -1]]  # 1 x 2 kernel
    assert max_pool2d(torch.arange(16.0).reshape(4, 4), 2).tolist() == [[5, 7], [13, 15]]
    assert max_pool2d(torch.arange(16.0).reshape(4, 4), 3, stride=1).tolist() == [[10, 11], [14, 15]]


@pytest.mark.parametrize(
    ("padding", "expected"),
    [("valid", 10 - 3 + 1), ("same", 10), ("full", 10 + 3 - 1), (2, 10 + 4 - 3 + 1), ((0, 3), 10 + 3 - 3 + 1)],
)
def test_output_length_for_every_padding(padding, expected: int) -> None:
    assert output_length(10, 3, padding) == expected


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.filterwarnings(SAME_EVEN_WARNING)
def test_same_padding_with_an_even_kernel_puts_the_extra_zero_at_the_end(m: int) -> None:
    assert pad_amounts(m, "same") == ((m - 1) // 2, (m - 1) // 2 + 1)
    assert output_length(7, m, "same") == 7
    signal, kernel = torch.randn(7, dtype=torch.float64), torch.randn(m, dtype=torch.float64)
    expected = F.conv1d(signal[None, None], kernel[None, None], padding="same")[0, 0]  # torch's own 'same'
    torch.testing.assert_close(conv1d(signal, kernel, "same"), expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: conv1d(torch.ones(3), torch.ones(5)), "kernel of size 5 is larger than the"),
        (lambda: conv1d(torch.ones(6), torch.ones(2), stride=0), "stride must be positive, got 0"),
        (lambda: conv1d(torch.ones(6), torch.ones(2), "same", stride=2), "padding='same' is defined for stride 1"),
        (lambda: conv1d(torch.ones(2, 3), torch.ones(2)), "signal must have 1 dimensions"),
        (lambda: conv1d(torch.ones(6), torch.ones(2), "wide"), "padding must be 'valid', 'same', 'full'"),
        (lambda: conv1d(torch.ones(6), torch.ones(2), -1), "padding must be non-negative"),
        (lambda: conv2d(torch.ones(3), torch.ones(2, 2)), "image must have 2 dimensions"),
        (lambda: conv2d(torch.ones(4, 4), torch.ones(2, 2), stride=(1, -1)), "stride must be positive, got -1"),
        (lambda: conv2d_multichannel(torch.ones(2, 4, 4), torch.ones(1, 3, 2, 2)), "expects 3 input channels"),
        (lambda: max_pool2d(torch.ones(4), 2), "input must be h x w or c x h x w"),
        (lambda: max_pool2d(torch.ones(3, 3), 4), "kernel of size 4 is larger than the"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
