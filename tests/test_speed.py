"""The bundles' ``auto`` speed settings: channels-last on a CPU, bfloat16 on a GPU and on a CPU where a probe
measures it faster; the probe is kept per machine; a given value is used as it is."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from monai.bundle import ConfigParser

import monai_medspike.speed as speed
from tests.bundles.helpers import REPO


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(speed, "_told", set())
    probe = speed.probe_cpu_bfloat16  # a test may replace it
    probe.cache_clear()
    yield tmp_path / "monai_medspike" / "speed"
    probe.cache_clear()


def test_channels_last_auto_is_on_for_a_cpu_and_a_given_value_is_kept():
    assert speed.channels_last("auto", "cpu") is True and speed.channels_last("AUTO", torch.device("cpu")) is True
    assert speed.channels_last("auto", "cuda") is False  # no GPU needed to decide for one
    assert speed.channels_last("false", "cpu") is False and speed.channels_last(True, "cuda") is True
    with pytest.raises(ValueError, match="--channels_last must be true or false, got 'fast'"):
        speed.channels_last("fast", "cpu")


@pytest.mark.parametrize("ratio, chosen", [(0.5, "bfloat16"), (0.8, "bfloat16"), (1.3, "float32"), (14.0, "float32")])
def test_precision_auto_on_a_cpu_follows_the_probe_and_says_why_once(cache, monkeypatch, caplog, ratio, chosen):
    monkeypatch.setattr(speed, "probe_cpu_bfloat16", lambda: ratio)
    with caplog.at_level(logging.INFO, logger="monai_medspike.speed"):
        assert speed.precision("auto", "cpu") == chosen and speed.precision("auto", "cpu") == chosen
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"precision auto: {chosen} on cpu (a bfloat16 step took {ratio:.2f}")
    assert speed.precision("float32", "cpu") == "float32" and speed.precision("bfloat16", "cpu") == "bfloat16"


def test_precision_auto_on_cuda_is_bfloat16_where_the_gpu_supports_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert speed.precision("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert speed.precision("auto", "cuda:0") == "float32"


def test_the_cpu_probe_is_measured_once_per_machine_then_read_back(cache, monkeypatch):
    ratio = speed.probe_cpu_bfloat16()
    (saved,) = cache.glob("bfloat16-*.json")
    content = json.loads(saved.read_text())
    assert content["ratio"] == ratio > 0 and speed.cpu_name() in content["key"]
    assert set(content["seconds"]) == {"torch.float32", "torch.bfloat16"}
    speed.probe_cpu_bfloat16.cache_clear()

    def no_measuring(*args):
        raise AssertionError("measured again")

    monkeypatch.setattr(speed, "_step_time", no_measuring)
    assert speed.probe_cpu_bfloat16() == ratio  # from the cache folder
    saved.write_text("{damaged")  # a damaged file is measured again, not an error
    speed.probe_cpu_bfloat16.cache_clear()
    monkeypatch.setattr(speed, "_step_time", lambda dtype: 2.0 if dtype == torch.bfloat16 else 1.0)
    assert speed.probe_cpu_bfloat16() == 2.0 and json.loads(saved.read_text())["ratio"] == 2.0


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_the_bundles_build_their_network_with_the_auto_choice_unless_given(cache, tmp_path, monkeypatch, config):
    from tests.helpers import SMALL, write_model

    monkeypatch.setattr(speed, "probe_cpu_bfloat16", lambda: 0.5)  # a CPU with fast bfloat16
    configs = REPO / "bundles" / "kvasir" / "configs"
    small = {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL.items()}
    trained = ConfigParser()
    trained.read_config(str(configs / "train.json"))
    trained.update({**small, "output_root": str(tmp_path / "outputs")})
    model = write_model(tmp_path / "run" / "model.pt", trained)
    cases = (({}, (True, "bfloat16")), ({"channels_last": "false", "precision": "float32"}, (False, "float32")))
    for given, expected in cases:
        parser = ConfigParser()
        parser.read_config(str(configs / config))
        parser.update({"device": "cpu", **given})
        parser.update(small if config == "train.json" else {"ckpt_path": str(model)})
        net = parser.get_parsed_content("network_def")
        assert (net.channels_last, net.precision) == expected, given
