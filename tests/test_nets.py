"""U-Net: shapes, conditioning, determinism, batch independence, gradient flow, config validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.nets import UNet, UNetConfig, check_config, count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


TINY = UNetConfig(image_size=16, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)


def perturbed(net: UNet, std: float = 0.05, seed: int = 0) -> UNet:
    """Add noise to every parameter so the zero-initialised layers no longer hide the rest of the network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return net.eval()


def inputs(config: UNetConfig, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=g)
    return x, torch.randn(batch, generator=g)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("size", "mult"), [(8, (1, 2)), (28, (1, 2, 2)), (32, (1, 2, 2)), (64, (1, 1, 2, 2))])
def test_output_shape(channels, size, mult):
    config = dataclasses.replace(TINY, in_channels=channels, image_size=size, channel_mult=mult)
    net = perturbed(UNet(config))
    x, c_noise = inputs(config, batch=2)
    with torch.no_grad():
        out = net(x, c_noise)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_untrained_output_is_zero():
    """Zero-initialised conv_out (Karras et al. 2022): the raw network starts at exactly 0."""
    config = dataclasses.replace(TINY, num_classes=3)
    x, c_noise = inputs(config)
    assert torch.equal(UNet(config)(x, c_noise), torch.zeros_like(x))


def test_class_labels_change_output_and_none_is_null():
    config = dataclasses.replace(TINY, num_classes=4)
    net = perturbed(UNet(config))
    x, c_noise = inputs(config, batch=2)
    x, c_noise = x[:1].repeat(2, 1, 1, 1), c_noise[:1].repeat(2)  # same image and noise level, two labels
    with torch.no_grad():
        out = net(x, c_noise, torch.tensor([0, 3]))
        null = net(x, c_noise, torch.full((2,), config.num_classes))
        none = net(x, c_noise, None)
    assert (out[0] - out[1]).abs().max() > 1e-4
    assert (out[0] - null[0]).abs().max() > 1e-4
    torch.testing.assert_close(none, null, rtol=0, atol=0)


def test_noise_level_changes_output():
    for embedding in ("fourier", "positional"):
        config = dataclasses.replace(TINY, noise_embedding=embedding)
        net = perturbed(UNet(config))
        x, _ = inputs(config, batch=1)
        with torch.no_grad():
            low, high = net(x, torch.tensor([-1.0])), net(x, torch.tensor([1.0]))
        assert (low - high).abs().max() > 1e-4, embedding


def test_deterministic_in_eval_mode():
    config = dataclasses.replace(TINY, num_classes=2, dropout=0.5, attention_resolutions=(8,))
    net = perturbed(UNet(config))
    x, c_noise = inputs(config)
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(net(x, c_noise, labels), net(x, c_noise, labels), rtol=0, atol=0)
    net.train()  # dropout is active in training mode: the check above is not vacuous
    assert not torch.equal(net(x, c_noise, labels), net(x, c_noise, labels))


def test_batch_independence():
    config = dataclasses.replace(TINY, num_classes=2, attention_resolutions=(16, 8))
    net = perturbed(UNet(config))
    x, c_noise = inputs(config, batch=4)
    labels = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        full = net(x, c_noise, labels)
        x2 = x.clone()
        x2[1:] = torch.randn_like(x2[1:])  # change the other samples only
        changed = net(x2, c_noise.flip(0).roll(1), labels.flip(0).roll(1))
        alone = net(x[:1], c_noise[:1], labels[:1])
    assert c_noise.flip(0).roll(1)[0] == c_noise[0]
    torch.testing.assert_close(changed[0], full[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone[0], full[0], rtol=1e-5, atol=1e-6)
    assert (changed[1:] - full[1:]).abs().max() > 1e-4


def test_gradients_reach_every_parameter():
    config = dataclasses.replace(TINY, num_classes=3, attention_resolutions=(8,), num_heads=2)
    net = perturbed(UNet(config)).train()
    x, c_noise = inputs(config, batch=4)
    target = torch.randn_like(x)
    loss = (net(x, c_noise, torch.tensor([0, 1, 2, 3])) - target).square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_gradients_from_zero_init_reach_output_layer():
    """At init the zero-initialised output layer gets gradient, so the first step moves it off zero."""
    net = UNet(TINY)
    x, c_noise = inputs(TINY)
    (net(x, c_noise) - x).square().mean().backward()
    assert net.conv_out.weight.grad.abs().sum() > 0


def test_attention_path():
    config = dataclasses.replace(TINY, image_size=16, channel_mult=(1, 2, 2), attention_resolutions=(8, 4), num_heads=2)
    net = perturbed(UNet(config))
    attention = [m for m in net.modules() if type(m).__name__ == "SelfAttention"]
    # encoder 1 + middle 1 + decoder 2 at 4x4; encoder 1 + decoder 2 at 8x8
    assert len(attention) == 7
    x, c_noise = inputs(config, batch=2)
    with torch.no_grad():
        with_attention = net(x, c_noise)
        for m in attention:
            m.proj.weight.zero_()
            m.proj.bias.zero_()
        without = net(x, c_noise)
    assert with_attention.shape == x.shape
    assert (with_attention - without).abs().max() > 1e-4


def _conv(i: int, o: int, k: int) -> int:
    return i * o * k * k + o


def _linear(i: int, o: int) -> int:
    return i * o + o


def _res(i: int, o: int, emb: int) -> int:
    """GroupNorm(i), conv 3x3, AdaGN Linear(emb -> 2 o), GroupNorm(o), conv 3x3, 1x1 skip when i != o."""
    return 2 * i + _conv(i, o, 3) + _linear(emb, 2 * o) + 2 * o + _conv(o, o, 3) + (_conv(i, o, 1) if i != o else 0)


def _attention(c: int) -> int:
    return 2 * c + _conv(c, 3 * c, 1) + _conv(c, c, 1)  # GroupNorm, qkv 1x1, output projection 1x1


def test_parameter_count_of_a_small_unet_by_hand():
    """The ADM layout written out for base 8, channel_mult (1, 2), one block per level, 16x16, 1 channel, 3 classes,
    attention at 8x8 (emb width 4 * 8 = 32). Skips: conv_in 8, level-0 block 8, downsample 8, level-1 block 16."""
    config = dataclasses.replace(TINY, num_classes=3, attention_resolutions=(8,))
    c, e = 8, 32
    embed = (3 + 1) * c + _linear(c, e) + _linear(e, e)  # label table with the null class, 2-layer MLP
    encoder = _res(c, c, e) + _conv(c, c, 3) + _res(c, 2 * c, e) + _attention(2 * c)
    middle = _res(2 * c, 2 * c, e) + _attention(2 * c) + _res(2 * c, 2 * c, e)
    decoder = (_res(4 * c, 2 * c, e) + _attention(2 * c) + _res(3 * c, 2 * c, e) + _attention(2 * c)  # 8x8
               + _conv(2 * c, 2 * c, 3)  # upsample
               + _res(3 * c, c, e) + _res(2 * c, c, e))  # 16x16
    total = embed + _conv(1, c, 3) + encoder + middle + decoder + 2 * c + _conv(c, 1, 3)
    assert total == 48_433
    assert count_parameters(UNet(config)) == total
    # unconditional: no label table; the Fourier frequencies are a buffer, not a parameter
    assert count_parameters(UNet(dataclasses.replace(config, num_classes=0))) == total - 4 * c


def test_fourier_frequencies_are_saved_with_the_weights():
    a, b = UNet(TINY), UNet(TINY)
    assert "embed.noise.freqs" in a.state_dict()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.embed.noise.freqs, b.embed.noise.freqs)


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({"image_size": 30}, "valid: 8, 12, 16, 20, 24, 28, 32"),  # 30 is not divisible by 4 (3 levels)
        ({"image_size": 4}, "valid: 8, 12"),
        ({"image_size": 128}, "60, 64)"),
        ({"in_channels": 17}, "in_channels must be an integer in 1..16"),
        ({"noise_embedding": "sinusoid"}, "valid: fourier, positional"),
        ({"attention_resolutions": (8,)}, "valid: 28, 14, 7"),
        ({"base_channels": 32, "attention_resolutions": (7,), "num_heads": 3}, "valid: a divisor of 64"),
        ({"channel_mult": (1,) * 8}, "valid: at most 7 levels"),
        ({"base_channels": 6}, "e.g. 16, 32, 64, 128"),
        ({"num_res_blocks": 0}, ">= 1"),
        ({"dropout": 1.0}, "[0, 1)"),
        ({"num_classes": -1}, ">= 0"),
    ],
)
def test_check_config_rejects(changes, valid):
    config = dataclasses.replace(UNetConfig(), **changes)
    with pytest.raises(UsageError, match=r"valid|must") as info:
        check_config(config)
    assert valid in str(info.value)
    with pytest.raises(UsageError):
        UNet(config)


def test_check_config_accepts_supported_sizes():
    for size, mult in [(8, (1, 2, 2)), (16, (1, 2)), (28, (1, 2, 2)), (32, (1, 2, 2, 2)), (64, (1, 2, 2, 2))]:
        check_config(UNetConfig(image_size=size, channel_mult=mult))


def test_forward_rejects_bad_inputs():
    net = UNet(TINY)
    x, c_noise = inputs(TINY)
    with pytest.raises(UsageError, match=r"\[B, 1, 16, 16\]"):
        net(x[:, :, :8, :8], c_noise)
    with pytest.raises(UsageError, match="c_noise"):
        net(x, c_noise[:2])
    with pytest.raises(UsageError, match="unconditional"):
        net(x, c_noise, torch.zeros(3, dtype=torch.long))
    assert net(x, torch.tensor(0.5)).shape == x.shape  # a scalar noise level applies to the whole batch
