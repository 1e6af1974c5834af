"""Pretrained weights for the learned metrics: one registry of known files and one resolver for all of them.

Resolution order for a file (first hit wins):

1. the directory passed as `weights_dir`,
2. the directory in the environment variable `OPUSCLIP_WEIGHTS_DIR`,
3. the torch hub cache, `torch.hub.get_dir()/checkpoints` (where torchvision and torch-fidelity put them),
4. the canonical URL, downloaded into the torch hub cache and verified (full sha256 where known, else the
   sha256 prefix in the file name, as torch hub does) before it is moved into place; skipped when the
   environment variable `OPUSCLIP_WEIGHTS_OFFLINE` is 1.

Offline and missing, `MissingWeightsError` names the file, its URL and the exact directories searched. A
metric never falls back to random weights. Files found on disk are trusted as they are (as torch hub trusts
its cache); `verify_weights` / `opusclip-track weights verify` checks them against the registry.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from opusclip_track._files import atomic_open

ENV_WEIGHTS_DIR = "OPUSCLIP_WEIGHTS_DIR"
# Set to 1 to forbid downloads (air-gapped clusters, tests): a missing file then fails at once.
ENV_OFFLINE = "OPUSCLIP_WEIGHTS_OFFLINE"
_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 30.0


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is not on disk and could not be downloaded."""


class WeightsChecksumError(ValueError):
    """A weights file's sha256 does not match the registry."""


class WeightsLoadError(ValueError):
    """A weights file on disk could not be loaded: it is corrupt, truncated or a different file."""


@dataclass(frozen=True)
class WeightsFile:
    """One known pretrained weights file.

    Attributes:
        key: short registry name (`"inception"`, `"alexnet"`, ...).
        filename: the file name on disk (the canonical one; torch hub caches it under this name).
        url: canonical download URL.
        sha256: full sha256 hex digest when known.
        hash_prefix: sha256 prefix carried in the file name (torch hub convention) when there is one.
        size_mb: approximate size in MB, for display only.
        used_by: the metrics that load it.
        aliases: other file names accepted on disk for the same content.
        description: one line about what it is.
    """

    key: str
    filename: str
    url: str
    sha256: str | None = None
    hash_prefix: str | None = None
    size_mb: float | None = None
    used_by: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """All file names searched for, the canonical one first."""
        return (self.filename, *self.aliases)


REGISTRY: dict[str, WeightsFile] = {
    spec.key: spec
    for spec in (
        WeightsFile(
            key="inception",
            filename="weights-inception-2015-12-05-6726825d.pth",
            url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
            hash_prefix="6726825d",
            size_mb=91.2,
            used_by=("FID", "IS"),
            # pytorch-fid ships the same TF-2015-12-05 conversion (same hash prefix, same key names).
            aliases=("pt_inception-2015-12-05-6726825d.pth",),
            description="FID Inception-v3 (TF 2015-12-05 graph), torch-fidelity port",
        ),
        WeightsFile(
            key="alexnet",
            filename="alexnet-owt-7be5be79.pth",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            hash_prefix="7be5be79",
            size_mb=233.1,
            used_by=("LPIPS (net='alex', default)",),
            description="torchvision AlexNet ImageNet weights (LPIPS backbone)",
        ),
        WeightsFile(
            key="vgg16",
            filename="vgg16-397923af.pth",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            hash_prefix="397923af",
            size_mb=527.8,
            used_by=("LPIPS (net='vgg')",),
            description="torchvision VGG16 ImageNet weights (LPIPS backbone)",
        ),
        WeightsFile(
            key="i3d",
            filename="i3d_torchscript.pt",
            url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
            used_by=("FVD",),
            description="I3D Kinetics-400 TorchScript (StyleGAN-V port of the tf.hub FVD model); "
            "no published checksum",
        ),
    )
}


def get_weights_file(key: str) -> WeightsFile:
    """Look up a registry entry by key.

    Raises:
        KeyError: for an unknown key; the message lists the known ones.
    """
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"key: expected one of {sorted(REGISTRY)}, received {key!r}") from None


def file_stamp(path: Path) -> tuple[str, int, int]:
    """(absolute path, mtime_ns, size): a cache key that changes when the file is replaced."""
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def hub_checkpoints_dir() -> Path:
    """The torch hub cache for weights files: `torch.hub.get_dir()/checkpoints` (honours `TORCH_HOME`).

    Without importing torch (~2 s for `weights list`): when torch is not loaded, nothing can have called
    `torch.hub.set_dir`, so the directory is torch's default, `$TORCH_HOME/hub` with `$TORCH_HOME` defaulting
    to `$XDG_CACHE_HOME/torch` and that to `~/.cache/torch`, computed here the way `torch.hub` does.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir()) / "checkpoints"
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(torch_home) / "hub" / "checkpoints"


def search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """The directories searched for weights files, in priority order (explicit, env var, hub cache)."""
    dirs = [Path(weights_dir).expanduser()] if weights_dir is not None else []
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(hub_checkpoints_dir())
    return dirs


def find_weights(spec: WeightsFile | str, weights_dir: str | Path | None = None) -> Path | None:
    """Return the first file on disk for `spec` in `search_dirs(weights_dir)` order, or None."""
    spec = _as_spec(spec)
    for directory in search_dirs(weights_dir):
        for name in spec.names:
            path = directory / name
            if path.is_file():
                return path
    return None


def resolve_weights(
    spec: WeightsFile | str, weights_dir: str | Path | None = None, *, download: bool | None = None
) -> Path:
    """Find a weights file on disk, or download and verify it into the torch hub cache.

    Args:
        spec: a registry key (`"inception"`, `"alexnet"`, `"vgg16"`, `"i3d"`) or a `WeightsFile`.
        weights_dir: a directory searched first; `None` to search only `OPUSCLIP_WEIGHTS_DIR` and the hub cache.
        download: whether to try the URL when the file is on no search path; by default yes unless the
            environment variable `OPUSCLIP_WEIGHTS_OFFLINE` is 1.

    Returns:
        The path of the file.

    Raises:
        MissingWeightsError: when the file is missing and the download is off or fails; the message names
            the file, the URL and the directories.
        WeightsChecksumError: when a download does not match the registry's checksum.

    Example:
        >>> path = resolve_weights("alexnet", weights_dir="/data/weights")  # doctest: +SKIP
    """
    spec = _as_spec(spec)
    found = find_weights(spec, weights_dir)
    if found is not None:
        return found
    if download is None:
        download = os.environ.get(ENV_OFFLINE, "0").strip().lower() not in ("1", "true", "yes")
    if not download:
        reason = f"downloads are disabled ({ENV_OFFLINE}=1 or download=False)"
        raise MissingWeightsError(missing_message(spec, weights_dir, reason=reason))
    try:
        return download_weights(spec)
    except (urllib.error.URLError, OSError) as err:
        raise MissingWeightsError(missing_message(spec, weights_dir, reason=f"download failed: {err}")) from err


def missing_message(spec: WeightsFile, weights_dir: str | Path | None, *, reason: str) -> str:
    """The message of `MissingWeightsError`: what is missing, where it was looked for, how to provide it."""
    dirs = "\n".join(f"  - {d}" for d in search_dirs(weights_dir))
    checksum = f"sha256 {spec.sha256}" if spec.sha256 else (
        f"sha256 starting with {spec.hash_prefix}" if spec.hash_prefix else "no published checksum")
    return (
        f"weights file {spec.filename!r} ({spec.description}; used by {', '.join(spec.used_by)}) was not found "
        f"and {reason}.\nSearched, in order:\n{dirs}\n"
        f"Download it from {spec.url} ({checksum}) and put it in one of those directories (pass "
        f"weights_dir=..., or set {ENV_WEIGHTS_DIR}), or run `opusclip-track weights download {spec.key}` "
        f"on a machine with internet and copy {hub_checkpoints_dir()} over."
    )


def download_weights(spec: WeightsFile | str, dest_dir: str | Path | None = None, *, url: str | None = None,
                     progress: bool = False) -> Path:
    """Download a weights file, verify it and move it into place atomically.

    Args:
        spec: a registry key or a `WeightsFile`.
        dest_dir: target directory; the torch hub cache by default.
        url: where to fetch it from instead of `spec.url` (a mirror); any URL urllib opens (`https://`,
            `file://`). The registry's checksum is verified all the same.
        progress: show a tqdm progress bar.

    Returns:
        The path of the verified file.

    Raises:
        urllib.error.URLError, OSError: when the download fails.
        WeightsChecksumError: when the content does not match the registry's checksum (nothing is kept).
    """
    spec = _as_spec(spec)
    dest = Path(dest_dir).expanduser() if dest_dir is not None else hub_checkpoints_dir()
    target = dest / spec.filename
    with atomic_open(target) as out:  # a failed or mismatching download leaves nothing behind
        digest = _stream_to_file(url or spec.url, out, progress=progress)
        _check_digest(spec, digest, source=url or spec.url)
    if spec.sha256 is None and spec.hash_prefix is None:
        warnings.warn(f"{spec.filename}: no published checksum to verify the download against; "
                      f"its sha256 is {digest}", stacklevel=2)
    return target


def _stream_to_file(url: str, out: BinaryIO, *, progress: bool) -> str:
    """Copy `url` into the binary file `out`, hashing on the way; returns the sha256 hex digest."""
    sha = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (registry URLs)
        total = response.headers.get("Content-Length")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1])
        while chunk := response.read(_CHUNK):
            sha.update(chunk)
            out.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    return sha.hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def verify_weights(spec: WeightsFile | str, path: str | Path) -> str | None:
    """Check a file on disk against the registry's checksum.

    Returns:
        The file's sha256 when the registry has a checksum and it matches; None when the registry has no
        checksum to compare with (the file cannot be verified).

    Raises:
        WeightsChecksumError: on a mismatch; the message names the file, the expected and the received hash.
    """
    spec = _as_spec(spec)
    if spec.sha256 is None and spec.hash_prefix is None:
        return None
    digest = sha256_file(path)
    _check_digest(spec, digest, source=str(path))
    return digest


def _check_digest(spec: WeightsFile, digest: str, *, source: str) -> None:
    if spec.sha256 is not None and digest != spec.sha256.lower():
        expected = spec.sha256
    elif spec.sha256 is None and spec.hash_prefix is not None and not digest.startswith(spec.hash_prefix.lower()):
        expected = f"{spec.hash_prefix}..."
    else:
        return
    raise WeightsChecksumError(
        f"{spec.filename}: checksum mismatch for {source}: expected sha256 {expected}, received {digest}. "
        f"The file is corrupt, truncated or a different file; delete it and download it again from {spec.url}."
    )


def _as_spec(spec: WeightsFile | str) -> WeightsFile:
    return spec if isinstance(spec, WeightsFile) else get_weights_file(spec)
