"""Decode images and videos into uint8 frame tensors [T, 3, H, W] (an image is T=1).

Videos are `.npy` arrays [T, H, W, 3] (ShapesWorld), directories of frame images
(sorted by name; how real videos are often pre-extracted) or video files (mp4,
webm, ... decoded with PyAV). Frames are sampled TSN-style: the video is cut into
`num_frames` equal segments; evaluation takes the middle frame of each, training
a random frame of each.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workbench.errors import DataError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_FILE_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".gif")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load_image(path: str | Path) -> torch.Tensor:
    """uint8 [1, 3, H, W]."""
    if Path(path).exists() and not Path(path).is_file():  # a FIFO would block open() forever
        raise DataError(f"unreadable image {path}: not a regular file")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL: SyntaxError = broken PNG
        raise DataError(f"unreadable image {path}: {_one_line(err)}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)


def frame_indices(total: int, num_frames: int, rng: np.random.Generator | None) -> list[int]:
    """One frame per equal segment: the middle one (rng=None) or a random one."""
    if total < num_frames:
        raise ValueError(f"{total} frames < {num_frames}")
    edges = [total * i // num_frames for i in range(num_frames + 1)]
    if rng is None:
        return [(start + end - 1) // 2 for start, end in pairwise(edges)]
    return [int(rng.integers(start, end)) for start, end in pairwise(edges)]


def load_video(path: str | Path, num_frames: int, rng: np.random.Generator | None) -> torch.Tensor:
    """uint8 [num_frames, 3, H, W], frames sampled by `frame_indices`."""
    path = Path(path)
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        picked = _pick(path, len(frames), num_frames, rng)
        return torch.cat([load_image(frames[i]) for i in picked])
    if path.suffix.lower() in VIDEO_FILE_SUFFIXES:
        return decode_video_file(path, num_frames, rng)
    if path.suffix != ".npy":
        raise DataError(
            f"unreadable video {path}: supported are .npy arrays [T, H, W, 3], directories of frame images "
            f"and video files ({', '.join(VIDEO_FILE_SUFFIXES)})"
        )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"unreadable video {path}: {_one_line(err)}") from None
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise DataError(f"unreadable video {path}: expected uint8 [T, H, W, 3], got {array.dtype} {list(array.shape)}")
    picked = _pick(path, array.shape[0], num_frames, rng)
    return torch.from_numpy(np.ascontiguousarray(array[picked])).permute(0, 3, 1, 2)


def _pyav(path: Path):
    try:
        import av  # deferred: only video files (mp4, webm, ...) need PyAV; .npy videos and images do not
    except ImportError:
        raise DataError(f"unreadable video {path}: decoding video files needs PyAV (pip install av)") from None
    return av


def _open_video_file(path: Path):
    """A PyAV container with at least one video stream; DataError naming the file otherwise."""
    av = _pyav(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise DataError(f"unreadable video {path}: {_one_line(err)}") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"unreadable video {path}: no video stream in the file")
    return container


def video_file_length(path: str | Path) -> int:
    """Frames in a video file: the container's count, else its packets counted (nothing decoded)."""
    path = Path(path)
    av = _pyav(path)
    with _open_video_file(path) as container:
        stream = container.streams.video[0]
        try:
            return stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        except av.error.FFmpegError as err:
            raise DataError(f"unreadable video {path}: {_one_line(err)}") from None


def decode_video_file(path: str | Path, num_frames: int, rng: np.random.Generator | None) -> torch.Tensor:
    """uint8 [num_frames, 3, H, W] of a video file: frames picked by `frame_indices` (in
    presentation order), decoded in one pass that stops after the last picked frame."""
    path = Path(path)
    av = _pyav(path)
    picked = _pick(path, video_file_length(path), num_frames, rng)
    wanted, frames = set(picked), {}
    with _open_video_file(path) as container:
        try:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    frames[index] = frame.to_ndarray(format="rgb24")
                if index >= picked[-1]:
                    break
        except av.error.FFmpegError as err:
            raise DataError(f"unreadable video {path}: {_one_line(err)}") from None
    if len(frames) < len(wanted):
        raise DataError(f"unreadable video {path}: decoding ended before frame {min(wanted - set(frames))}")
    return torch.from_numpy(np.stack([frames[i] for i in picked])).permute(0, 3, 1, 2)


def check_video(path: str | Path) -> int:
    """Decode a video's container and its first frame (what `data check` promises); its frame
    count. A truncated mp4 or a text file named .mp4 is a DataError naming the file."""
    path = Path(path)
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not frames:
            raise DataError(
                f"unreadable video {path}: a frame directory without frame images ({', '.join(FRAME_SUFFIXES)})"
            )
        load_image(frames[0])
        return len(frames)
    if path.suffix.lower() in VIDEO_FILE_SUFFIXES:
        total = video_file_length(path)
        if total < 1:
            raise DataError(f"unreadable video {path}: no frames")
        _first_frame(path)
        return total
    load_video(path, 1, None)  # .npy: shape and dtype checked, one frame read
    return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])


def _first_frame(path: Path) -> None:
    av = _pyav(path)
    with _open_video_file(path) as container:
        try:
            for _ in container.decode(video=0):
                return
        except av.error.FFmpegError as err:
            raise DataError(f"unreadable video {path}: {_one_line(err)}") from None
    raise DataError(f"unreadable video {path}: no frame could be decoded")


def _pick(path: Path, total: int, num_frames: int, rng: np.random.Generator | None) -> list[int]:
    if total < num_frames:
        raise DataError(
            f"video {path} has {total} frames, fewer than data.num_frames={num_frames} "
            "(lower data.num_frames or set data.on_bad_sample=skip)"
        )
    return frame_indices(total, num_frames, rng)


def load_masks(path: str | Path) -> torch.Tensor:
    """uint8 [K, H, W] object masks (ShapesWorld `masks/<id>.npy`)."""
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise DataError(f"unreadable mask file {path}: {_one_line(err)}") from None
