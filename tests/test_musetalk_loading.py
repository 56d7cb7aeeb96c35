"""MuseTalk's files: safe and strict reading, both key spellings, configs, "which file goes where".

Cheap: the weights here are shapes-only (meta) tensors in the official layout, which is all a
key-and-shape check looks at; the numbers themselves are proven in test_musetalk_conformance.py.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from lipsyncd.engine.errors import ModelError
from lipsyncd.engine.musetalk import layout
from lipsyncd.engine.musetalk.configs import checked_config, reference_config
from lipsyncd.engine.musetalk.networks import build_unet, build_vae, build_whisper_encoder, load_networks
from lipsyncd.engine.musetalk.weights import read_weights
from musetalk_weights import FIXTURES, shapes_only, write_official_layout


def unet_config() -> dict:
    return reference_config(layout.UNET_CONFIG)


def test_shipped_reference_configs_are_the_fixtures() -> None:
    for relative in (layout.UNET_CONFIG, layout.VAE_CONFIG, layout.WHISPER_CONFIG, layout.WHISPER_PREPROCESSOR):
        assert reference_config(relative) == json.loads((FIXTURES / "models" / relative).read_text())
        checked_config(relative, FIXTURES / "models" / relative)


def test_official_unet_layout_fits_and_head_count_is_eight() -> None:
    unet = build_unet(unet_config(), shapes_only("unet"))
    assert sum(p.numel() for p in unet.parameters()) == 849_947_844
    attention = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attention.heads == 8 and attention.inner_dim == 320  # "attention_head_dim: 8" = 8 heads


@pytest.mark.parametrize("keys", ["file", "rule"])
def test_vae_accepts_legacy_and_current_attention_names(keys: str) -> None:
    state = shapes_only("vae", keys)
    assert ("encoder.mid_block.attentions.0.query.weight" in state) == (keys == "file")
    build_vae(reference_config(layout.VAE_CONFIG), state)


@pytest.mark.parametrize("keys", ["file", "rule"])
def test_whisper_accepts_keys_with_and_without_model_prefix(keys: str) -> None:
    state = shapes_only("whisper", keys)
    assert all(k.startswith("model.") for k in state) == (keys == "file")
    encoder = build_whisper_encoder(reference_config(layout.WHISPER_CONFIG), state)
    assert len(encoder.layers) == 4 and encoder.config.d_model == 384


@pytest.mark.parametrize("damage, words", [
    (lambda s: s.pop("conv_in.weight"), "'conv_in.weight' is missing"),
    (lambda s: s.update({"extra.weight": torch.empty(1, device="meta")}), "unexpected entry 'extra.weight'"),
    (lambda s: s.update({"conv_out.bias": torch.empty(5, device="meta")}),
     "'conv_out.bias' has shape (5,), expected (4,)"),
    (lambda s: s.update({"conv_out.bias": torch.zeros(4, dtype=torch.int64)}), "'conv_out.bias' holds torch.int64"),
])
def test_unet_file_that_does_not_fit_is_refused_naming_file_and_key(damage, words: str) -> None:
    state = shapes_only("unet")
    damage(state)
    with pytest.raises(ModelError) as caught:
        build_unet(unet_config(), state, source="models/musetalkV15/unet.pth")
    message = str(caught.value)
    assert "models/musetalkV15/unet.pth" in message and words in message
    assert "lipsyncd models fetch musetalk" in message


def test_whisper_of_another_size_is_refused() -> None:
    state = shapes_only("whisper")
    state["model.encoder.layers.4.fc1.weight"] = torch.empty(1536, 384, device="meta")
    with pytest.raises(ModelError, match="unexpected entry 'encoder.layers.4.fc1.weight'"):
        build_whisper_encoder(reference_config(layout.WHISPER_CONFIG), state)


class Payload:
    """Stands for a pickle that would run code when loaded."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_read_weights_refuses_code_garbage_and_non_weights(tmp_path: Path) -> None:
    evil = tmp_path / "unet.pth"
    torch.save({"conv_in.weight": torch.zeros(1), "x": Payload()}, evil)
    with pytest.raises(ModelError, match="contain code, which is refused"):
        read_weights(evil)
    truncated = tmp_path / "cut.bin"
    torch.save({"a": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(ModelError, match="not a readable weights file"):
        read_weights(truncated)
    listed = tmp_path / "list.bin"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ModelError, match="other than a plain set of named weights"):
        read_weights(listed)
    with pytest.raises(ModelError, match="does not exist"):
        read_weights(tmp_path / "absent.bin")


def test_read_weights_reads_torch_and_safetensors_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = OrderedDict(a=torch.arange(6.0).reshape(2, 3), b=torch.ones(2))
    torch.save(state, tmp_path / "w.bin")
    save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("w.bin", "w.safetensors"):
        got = read_weights(tmp_path / name)
        assert list(got) == ["a", "b"] and torch.equal(got["a"], state["a"])


def test_config_of_another_model_is_refused(tmp_path: Path) -> None:
    config = reference_config(layout.WHISPER_CONFIG) | {"d_model": 512}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="d_model = 512 where MuseTalk 1.5 needs 384"):
        checked_config(layout.WHISPER_CONFIG, tmp_path / "config.json")
    del config["d_model"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="lacks the field 'd_model'"):
        checked_config(layout.WHISPER_CONFIG, tmp_path / "config.json")
    (tmp_path / "config.json").write_text("<html>")
    with pytest.raises(ModelError, match="not readable JSON"):
        checked_config(layout.WHISPER_CONFIG, tmp_path / "config.json")


def test_missing_files_say_which_file_goes_where(tmp_path: Path) -> None:
    write_official_layout(tmp_path)
    (tmp_path / layout.VAE_WEIGHTS).unlink()
    (tmp_path / layout.WHISPER_PREPROCESSOR).write_bytes(b"")
    with pytest.raises(ModelError) as caught:
        layout.require_files(tmp_path)
    message = str(caught.value)
    assert "2 of its 7 files are missing" in message
    assert f"{layout.VAE_WEIGHTS} at {(tmp_path / layout.VAE_WEIGHTS).resolve()}" in message
    assert str((tmp_path / layout.WHISPER_PREPROCESSOR).resolve()) in message
    assert "lipsyncd models fetch musetalk" in message and str(tmp_path / layout.UNET_WEIGHTS) not in message


def test_load_networks_reads_the_official_layout(tmp_path: Path) -> None:
    networks = load_networks(layout.require_files(write_official_layout(tmp_path)), device="meta")
    assert networks.device.type == "meta"
    assert networks.unet.config.cross_attention_dim == 384 and networks.vae.config.latent_channels == 4
    assert networks.features.feature_size == 80
