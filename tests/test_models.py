"""Example models: shapes, range, rollout, the copy-last-frame start, learning, and the name registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from models import (
    TransformerConfig,
    TransformerModel,
    VideoGenerationConfig,
    VideoGenerationModel,
    build_model,
)
from opusclip_track.data import SyntheticVideoDataset

NAMES = ["video_generation", "transformer"]
# Small enough for a few CPU steps per test; the shared fields are the same for both models.
TINY = {"image_size": 32, "context_frames": 2, "future_frames": 4}
TINY_EXTRA = {"video_generation": {"width": 16}, "transformer": {"patch_size": 8, "n_layer": 2, "n_embd": 64}}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one intra-op thread (tests/_env.py)


def tiny(name: str, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, **{**TINY, **TINY_EXTRA[name], **overrides})  # type: ignore[arg-type]


def clips(num: int, frames: int, size: int) -> torch.Tensor:
    ds = SyntheticVideoDataset(num_clips=num, num_frames=frames, size=size, seed=1)
    return torch.stack([ds[i] for i in range(num)])  # (B, T, C, H, W)


@pytest.mark.parametrize("name", NAMES)
def test_default_forward_is_16_frame_clips_split_4_plus_12(name: str) -> None:
    model = build_model(name)
    context = clips(2, 4, 64)
    out = model(context)
    assert out.shape == (2, 12, 3, 64, 64)
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_generate_rolls_out_past_the_horizon_in_chunks(name: str) -> None:
    model = tiny(name, residual=False).eval()  # not residual: an untrained model still varies with its input
    video = clips(2, 5, 32)  # more context than the model needs: the last 2 frames are used
    out = model.generate(video, num_frames=10)  # 3 chunks of 4, cut to 10
    assert out.shape == (2, 10, 3, 32, 32) and not out.requires_grad
    assert 0.0 <= out.min() and out.max() <= 1.0
    with torch.no_grad():
        first = model(video[:, -2:])
        second = model(first[:, -2:])  # the second chunk sees the first chunk's last frames as context
    torch.testing.assert_close(out[:, :4], first)
    torch.testing.assert_close(out[:, 4:8], second)
    assert model.generate(video, num_frames=1).shape == (2, 1, 3, 32, 32)


@pytest.mark.parametrize("name", NAMES)
def test_untrained_residual_model_predicts_the_last_frame_stays_still(name: str) -> None:
    model = tiny(name)
    video = clips(2, 2, 32)
    expected = video[:, -1:].clamp(1e-3, 1 - 1e-3).expand(-1, 4, -1, -1, -1)
    torch.testing.assert_close(model(video), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(name: str) -> None:
    model = tiny(name)
    batch = clips(8, 6, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # The start is "the last context frame stays still"; the model must beat it clearly, not by noise.
    assert sum(losses[-5:]) / 5 < 0.75 * losses[0]


def test_parameter_counts() -> None:
    conv, transformer = VideoGenerationModel(VideoGenerationConfig()), TransformerModel(TransformerConfig())
    for model in (conv, transformer):
        assert model.num_parameters() == sum(p.numel() for p in model.parameters())
        assert 200_000 < model.num_parameters() < 3_000_000  # small enough to train on a CPU in minutes
    assert build_model("video_generation", width=64).num_parameters() > 3 * conv.num_parameters()
    # Depth adds exactly its blocks: nothing else in the model depends on it.
    block = sum(p.numel() for p in transformer.blocks[0].parameters())
    assert build_model("transformer", n_layer=6).num_parameters() == transformer.num_parameters() + 2 * block
    res_block = sum(p.numel() for p in conv.mid[0].parameters())
    assert build_model("video_generation", num_res_blocks=3).num_parameters() == conv.num_parameters() + res_block


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_name_the_argument(name: str) -> None:
    model = tiny(name)
    with pytest.raises(ValueError, match=r"context: expected a float tensor \(B, 2, 3, 32, 32\) in \[0, 1\], "
                                         r"received shape \(1, 3, 3, 32, 32\)"):
        model(torch.rand(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match=r"context: .*received shape \(1, 2, 3, 64, 64\)"):
        model.generate(torch.rand(1, 2, 3, 64, 64), num_frames=4)
    with pytest.raises(ValueError, match=r"num_frames: expected an int >= 1, received 0"):
        model.generate(torch.rand(1, 2, 3, 32, 32), num_frames=0)
    with pytest.raises(ValueError, match=r"clip: expected a float tensor \(B, >=6, 3, 32, 32\)"):
        model.loss(torch.rand(1, 5, 3, 32, 32))


def test_build_model_rejects_unknown_names_and_fields() -> None:
    assert isinstance(build_model("transformer", n_layer=1), TransformerModel)
    with pytest.raises(ValueError, match=r"name: expected one of \['transformer', 'video_generation'\], "
                                         r"received 'gan'"):
        build_model("gan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"overrides: expected fields of VideoGenerationConfig .*"
                                         r"received unknown n_layer"):
        build_model("video_generation", n_layer=2)
    with pytest.raises(ValueError, match=r"image_size: expected a multiple of 16, received 40"):
        build_model("transformer", image_size=40)
    with pytest.raises(ValueError, match=r"n_embd: expected a multiple of n_head=4, received 30"):
        build_model("transformer", n_embd=30)


def test_a_model_config_refuses_what_its_model_cannot_build_when_it_is_made() -> None:
    # A sweep's `width: 4` used to pass the config and fail inside every trial, at the first GroupNorm.
    with pytest.raises(ValueError, match=r"width: expected a multiple of 8 \(GroupNorm groups\), received 4"):
        VideoGenerationConfig(width=4)
    with pytest.raises(ValueError, match=r"image_size: expected a multiple of 8, received 36"):
        VideoGenerationConfig(image_size=36)
    with pytest.raises(ValueError, match=r"n_embd: expected a multiple of n_head=4, received 30"):
        TransformerConfig(n_embd=30)
    with pytest.raises(ValueError, match=r"patch_size: expected an int >= 1, received 0"):  # not a ZeroDivisionError
        TransformerConfig(patch_size=0)
    assert VideoGenerationConfig(width=24).width == 24


REPO = Path(__file__).resolve().parents[1]
MODEL_FILES = ["video_generation.py", "transformer.py"]  # one file per model, as in nanoGPT


def _imports(path: Path) -> list[tuple[str, str]]:
    """`(module, name)` for every `from module import name` and `(module, "")` for every `import module`."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            found += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def test_a_model_file_imports_only_the_shared_base_and_no_module_imports_a_private_name() -> None:
    """transformer.py used to import `_check_config` from video_generation.py: a change to one model could
    break the other, and a private helper was public in all but name."""
    siblings = {f"models.{name.removesuffix('.py')}" for name in MODEL_FILES}
    for name in MODEL_FILES:
        modules = {module for module, _ in _imports(REPO / "models" / name)}
        assert not modules & siblings, f"models/{name} imports a sibling model: {sorted(modules & siblings)}"
    for path in sorted((REPO / "models").glob("*.py")) + sorted((REPO / "scripts").glob("*.py")):
        private = [f"{module}.{name}" for module, name in _imports(path)
                   if name.startswith("_") and not name.startswith("__")]
        assert not private, f"{path.relative_to(REPO)} imports private names {private}"
