"""Weak/strong kornia pipelines from plain arguments (and from the config): range, determinism, per-sample
parameters, switches, fast RED."""

import kornia.augmentation as K
import pytest
import torch

from spml.augment import StrongAugment, WeakAugment
from spml.augment.elastic import RandomElasticTransform
from spml.config import load_config
from spml.factories import build_strong, build_weak
from spml.models import Normalize

RED = {"elastic_kernel_size": 9, "elastic_sigma": 4.0, "elastic_alpha": 1.0, "elastic_p": 1.0}


def images(batch: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))


def op_types(pipeline) -> list[type]:
    return [type(op) for op in pipeline.ops]


@pytest.mark.parametrize("build", [WeakAugment, lambda: StrongAugment(**RED), lambda: StrongAugment(elastic_p=0)])
def test_pipelines_keep_shape_dtype_and_range(build):
    x = images()
    out = build()(x * 1.0)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


def test_same_seed_same_output():
    pipeline, x = StrongAugment(**RED), images()
    torch.manual_seed(3)
    first = pipeline(x)
    torch.manual_seed(3)
    assert torch.equal(first, pipeline(x))
    assert not torch.equal(first, pipeline(x))


def test_parameters_are_drawn_per_sample():
    x = images(1).expand(6, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = StrongAugment(**RED)(x)
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 6))


def test_red_switch_adds_and_removes_the_elastic_op():
    config = load_config([], ["augment.elastic.kernel_size=9"]).augment
    assert RandomElasticTransform in op_types(build_strong(config, red=True))
    assert RandomElasticTransform not in op_types(build_strong(config, red=False))  # spml.mpc.red=false
    assert RandomElasticTransform not in op_types(StrongAugment(elastic_p=0.0))
    assert RandomElasticTransform not in op_types(StrongAugment(elastic_alpha=0.0))
    assert RandomElasticTransform not in op_types(build_weak(config))


def test_config_values_reach_the_ops():
    config = load_config(
        [],
        [
            "augment.flip_p=0.3",
            "augment.degrees=7",
            "augment.strong_degrees=12",
            "augment.elastic.p=0.25",
            "augment.elastic.kernel_size=9",
        ],
    ).augment
    weak, strong = build_weak(config), build_strong(config, red=True)
    assert weak.ops[0].p == 0.3 and strong.ops[0].p == 0.3
    assert weak.ops[1]._param_generator.degrees == 7 and strong.ops[1]._param_generator.degrees == 12
    elastic = next(op for op in strong.ops if isinstance(op, RandomElasticTransform))
    assert elastic.p == 0.25 and elastic.flags["kernel_size"] == (9, 9)


def test_zero_strength_ops_are_left_out():
    off = dict(flip_p=0, degrees=0, translate=0, scale=(1.0, 1.0))
    intensity_off = dict(brightness=0, contrast=0, gamma=(1.0, 1.0), noise_std=0, blur_p=0, erasing_p=0, elastic_p=0)
    assert op_types(WeakAugment(**off)) == [] and op_types(StrongAugment(**off, **intensity_off)) == []
    x = images()
    assert torch.equal(StrongAugment(**off, **intensity_off)(x), x)
    only_blur = StrongAugment(**off, **{**intensity_off, "blur_p": 0.5})
    assert op_types(only_blur) == [K.RandomGaussianBlur]


def test_even_elastic_kernel_is_refused_and_the_factory_names_the_key():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        StrongAugment(elastic_kernel_size=8)
    with pytest.raises(ValueError, match="augment.elastic.*kernel_size"):
        build_strong(load_config([], ["augment.elastic.kernel_size=8"]).augment, red=True)


def test_fast_elastic_equals_kornia():
    """Same RNG draw, same noise: matrix-product smoothing equals kornia's separable convolution."""
    args = {"kernel_size": (9, 15), "sigma": (3.0, 5.0), "alpha": (2.0, 0.5), "p": 1.0}
    x = torch.rand(3, 1, 24, 40)
    torch.manual_seed(0)
    reference = K.RandomElasticTransform(**args)(x)
    torch.manual_seed(0)
    fast = RandomElasticTransform(**args)(x)
    assert not torch.allclose(reference, x, atol=1e-2)
    assert torch.allclose(fast, reference, atol=1e-5)


def test_normalize_standardises_with_the_given_values():
    x = images()
    assert torch.allclose(Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25)
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalize(0.5, 0.0)
