"""Weak/strong kornia pipelines: range, determinism, per-sample parameters, switches, fast RED."""
import dataclasses

import kornia.augmentation as K
import pytest
import torch

from spml.augment import Normalize, build_strong, build_weak
from spml.augment.elastic import RandomElasticTransform
from spml.config.schema import AugmentConfig, ElasticConfig

CONFIG = AugmentConfig(elastic=ElasticConfig(kernel_size=9, sigma=4.0, alpha=1.0, p=1.0))


def images(batch: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))


def op_types(pipeline) -> list[type]:
    return [type(op) for op in pipeline.ops]


@pytest.mark.parametrize("build", [build_weak, lambda c: build_strong(c, True), lambda c: build_strong(c, False)])
def test_pipelines_keep_shape_dtype_and_range(build):
    x = images()
    out = build(CONFIG)(x * 1.0)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


def test_same_seed_same_output():
    pipeline, x = build_strong(CONFIG, red=True), images()
    torch.manual_seed(3)
    first = pipeline(x)
    torch.manual_seed(3)
    assert torch.equal(first, pipeline(x))
    assert not torch.equal(first, pipeline(x))


def test_parameters_are_drawn_per_sample():
    x = images(1).expand(6, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = build_strong(CONFIG, red=True)(x)
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 6))


def test_red_switch_adds_and_removes_the_elastic_op():
    assert RandomElasticTransform in op_types(build_strong(CONFIG, red=True))
    assert RandomElasticTransform not in op_types(build_strong(CONFIG, red=False))
    disabled = dataclasses.replace(CONFIG, elastic=dataclasses.replace(CONFIG.elastic, enabled=False))
    assert RandomElasticTransform not in op_types(build_strong(disabled, red=True))
    assert RandomElasticTransform not in op_types(build_weak(CONFIG))


def test_zero_strength_ops_are_left_out():
    off = AugmentConfig(flip_p=0, degrees=0, translate=0, scale=(1.0, 1.0), brightness=0, contrast=0,
                        gamma=(1.0, 1.0), noise_std=0, blur_p=0, erasing_p=0, strong_degrees=0,
                        elastic=ElasticConfig(p=0))
    assert op_types(build_weak(off)) == [] and op_types(build_strong(off, red=True)) == []
    x = images()
    assert torch.equal(build_strong(off, red=True)(x), x)
    only_blur = dataclasses.replace(off, blur_p=0.5)
    assert op_types(build_strong(only_blur, red=True)) == [K.RandomGaussianBlur]


def test_even_elastic_kernel_names_the_key():
    bad = dataclasses.replace(CONFIG, elastic=ElasticConfig(kernel_size=8))
    with pytest.raises(ValueError, match="augment.elastic.kernel_size"):
        build_strong(bad, red=True)


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


def test_normalize_standardises_with_the_config_values():
    x = images()
    assert torch.allclose(Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25)
    with pytest.raises(ValueError, match="augment.std"):
        Normalize(0.5, 0.0)
