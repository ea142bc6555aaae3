"""`workbench data check`: a clean data set passes, a damaged one lists every problem (exit 2);
the real-data experiment configs load and are checked the same way; PyAV video decoding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.config import EXPERIMENTS_DIR, load_config
from workbench.data.media import decode_video_file, frame_indices, load_video, video_file_length
from workbench.errors import DataError

REAL_DATA = ("coco", "flickr30k", "vqa", "nlvr2", "snli_ve", "msrvtt", "pretrain_4m")


def _check(root: Path, *extra: str):
    args = ["data", "check", "--set", f"data.root={root}", "--set", "data.shapes_size=tiny", *extra]
    return CliRunner().invoke(app, args)


def test_clean_shapesworld_passes_with_a_table_of_every_file(shapes_tiny):
    result = _check(shapes_tiny)
    assert result.exit_code == 0, result.output
    for name in (
        "pretrain.json",
        "retrieval_test.json",
        "video_retrieval_test.json",
        "vqa_train.json",
        "vqa_test.json",
        "nlvr_train.json",
        "nlvr_test.json",
        "ve_train.json",
        "ve_test.json",
    ):
        assert name in result.output
    pretrain_row = next(line for line in result.output.splitlines() if "pretrain.json" in line)
    assert [cell.strip() for cell in pretrain_row.split("│")[1:6]] == ["pretrain.json", "pretrain", "64", "0", "0"]
    assert "data check: OK — 9 files, 297 entries" in result.output


def test_duplicate_caption_rate_counts_captions_of_several_images():
    from workbench.data.check import duplicate_caption_rate

    entries = [
        {"image": "a.png", "caption": ["there is one shape.", "a red circle."]},
        {"image": "b.png", "caption": ["There is one  shape.", "a blue square."]},
        {"image": "c.png", "caption": "a red circle on the left."},
        {"image": "a.png", "caption": ["a red circle."]},  # the same image again: not a duplicate
    ]
    assert duplicate_caption_rate(entries, "image") == pytest.approx(100 * 2 / 6)
    assert duplicate_caption_rate([], "image") == 0.0


def test_data_check_reports_the_duplicate_rate_of_retrieval_files(shapes_tiny, tmp_path):
    root = tmp_path / "sw"
    shutil.copytree(shapes_tiny, root)
    entries = json.loads((root / "retrieval_test.json").read_text())
    entries[1]["caption"][0] = entries[0]["caption"][0]
    (root / "retrieval_test.json").write_text(json.dumps(entries))
    result = _check(root, "--set", "data.generate=false")
    row = next(line for line in result.output.splitlines() if "retrieval_test.json" in line)
    assert row.split("│")[-2].strip() == f"{100 * 2 / (5 * len(entries)):.2f}".rstrip("0").rstrip(".")
    pretrain_row = next(line for line in result.output.splitlines() if "pretrain.json" in line)
    assert pretrain_row.split("│")[-2].strip() == "-"


def test_a_deleted_image_a_corrupt_image_and_broken_json_are_listed_with_exit_2(shapes_tiny, tmp_path):
    root = tmp_path / "damaged"
    shutil.copytree(shapes_tiny, root)
    entries = json.loads((root / "pretrain.json").read_text())
    (root / entries[3]["image"]).unlink()
    (root / entries[5]["image"]).write_bytes(b"not a png")
    (root / "ve_test.json").write_text('[{"image": "images/a.png", "sentence": "x",')

    result = _check(root, "--set", "eval.tasks=[retrieval,ve]")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert f"{root / 'pretrain.json'}[3].image: file not found: {root / entries[3]['image']}" in lines
    assert any(line.startswith(f"pretrain.json: unreadable image {root / entries[5]['image']}") for line in lines)
    assert any(line.startswith(f"{root / 've_test.json'}: invalid JSON at line 1") for line in lines)
    row = next(line for line in lines if "pretrain.json" in line and "│" in line)
    assert [cell.strip() for cell in row.split("│")[1:6]] == ["pretrain.json", "pretrain", "63", "1", "1"]
    assert "unreadable file" in next(line for line in lines if "ve_test.json" in line and "│" in line)
    assert f"data check: problems found in {root}" in lines[-1]


def test_missing_files_and_tokenizer_are_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _check(tmp_path / "empty", "--set", "eval.tasks=[nlvr]")
    assert result.exit_code == 2
    assert f"missing file: {tmp_path / 'empty' / 'nlvr_train.json'}" in result.output.splitlines()
    assert "tokenizer: tokenizer not found: looked in" in result.output


@pytest.mark.parametrize("name", REAL_DATA)
def test_real_data_configs_load_mark_their_placeholders_and_are_checked(name):
    text = (EXPERIMENTS_DIR / f"{name}.yaml").read_text()
    cfg = load_config(name)
    placeholders = [line for line in text.splitlines() if "/path/to/" in line]
    assert placeholders and all("FILL IN" in line for line in placeholders)
    assert cfg.data.generate is False and cfg.model.vision.timm_name and cfg.model.text.hf_name
    result = CliRunner().invoke(app, ["data", "check", "-e", name, "--no-decode"])
    assert result.exit_code == 2
    assert f"missing file: {Path(cfg.data.root) / cfg.data.pretrain_files[0]}" in result.output


# ------------------------------------------------------------ video files
COLOURS = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 255),
    (0, 0, 0),
]


@pytest.fixture
def mp4(tmp_path) -> Path:
    """An 8-frame mp4 (PyAV, MPEG-4): frame i is a solid COLOURS[i] square."""
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for colour in COLOURS:
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), colour, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _frame_numbers(frames) -> list[int]:
    """Which COLOURS entry each decoded frame is (nearest colour: the codec is lossy)."""
    centres = frames[:, :, 16, 16].float().numpy()  # [T, 3]
    return [int(np.argmin(((np.asarray(COLOURS) - c) ** 2).sum(axis=1))) for c in centres]


def test_mp4_frames_uniform_and_random_per_segment(mp4):
    assert video_file_length(mp4) == 8
    uniform = load_video(mp4, 4, rng=None)
    assert uniform.shape == (4, 3, 32, 32) and uniform.dtype.is_floating_point is False
    assert _frame_numbers(uniform) == [0, 2, 4, 6]  # the middle (lower) frame of each 2-frame segment

    for seed in range(3):
        picked = _frame_numbers(load_video(mp4, 4, rng=np.random.default_rng(seed)))
        assert picked == frame_indices(8, 4, np.random.default_rng(seed))
        assert [index // 2 for index in picked] == [0, 1, 2, 3]  # one frame from each segment
    assert _frame_numbers(decode_video_file(mp4, 8, rng=None)) == list(range(8))


def test_unreadable_or_short_video_files_are_data_errors(mp4, tmp_path):
    with pytest.raises(DataError, match=r"has 8 frames, fewer than data\.num_frames=9"):
        load_video(mp4, 9, rng=None)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=rf"unreadable video {broken}: "):
        load_video(broken, 2, rng=None)
