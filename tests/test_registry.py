"""Registry: names, metadata, builder arguments and the errors people see when they get them wrong."""

import pytest
import torch.nn as nn

import segcore
from segcore.registry import register_model


def test_list_models_filters_by_task():
    names = segcore.list_models()
    assert "unet" in names and names == sorted(names)
    assert "unet" in segcore.list_models(task="semantic")
    assert "unet" not in segcore.list_models(task="saliency")
    with pytest.raises(ValueError, match="unknown task 'video'"):
        segcore.list_models(task="video")


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as error:
        segcore.create_model("unte", num_classes=2)
    assert "unknown model 'unte'" in str(error.value) and "unet" in str(error.value)
    with pytest.raises(ValueError, match="known models"):
        segcore.model_info("nope")


def test_create_model_records_architecture_for_saving():
    model = segcore.create_model("unet", num_classes=5, width=4)
    assert model.segcore_config == {"architecture": "unet", "num_classes": 5, "model_kwargs": {"width": 4}}
    assert model.classifier.out_channels == 5


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True, 10**9])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match=r"num_classes must be an integer in 1..1024"):
        segcore.create_model("unet", num_classes=num_classes)


def test_bad_kwargs_name_the_builder_signature():
    with pytest.raises(ValueError, match="bad arguments for model 'unet'.*width"):
        segcore.create_model("unet", num_classes=2, depth=3)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        segcore.create_model("unet", num_classes=2, width=object())


def test_pretrained_backbone_refused_where_none_exists():
    with pytest.raises(ValueError, match="no pretrained backbone"):
        segcore.create_model("unet", num_classes=2, pretrained_backbone=True)


def test_register_model_rejects_bad_task_and_duplicates():
    with pytest.raises(ValueError, match="task must be one of"):
        register_model("x", task="video", paper="-", default_size=(8, 8))
    with pytest.raises(ValueError, match="already registered"):
        @register_model("unet", task="semantic", paper="-", default_size=(8, 8))
        def another_unet(num_classes, in_channels=3):
            return nn.Conv2d(in_channels, num_classes, 1)
