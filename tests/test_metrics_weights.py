"""The weights resolver and `opusclip-track weights`: search order, real downloads from a local HTTP server
(127.0.0.1) with sha256 verification, missing-weights messages. Nothing here touches the internet."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from opusclip_track.cli.weights import add_weights_parser
from opusclip_track.metrics import weights
from opusclip_track.metrics.weights import (
    MissingWeightsError,
    WeightsChecksumError,
    WeightsFile,
    download_weights,
    resolve_weights,
    verify_weights,
)

PAYLOAD = b"pretend these are weights\n" * 1000


@pytest.fixture(autouse=True)
def _hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private torch hub cache (TORCH_HOME) and no OPUSCLIP_WEIGHTS_DIR from the environment."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR, raising=False)
    monkeypatch.delenv(weights.ENV_OFFLINE, raising=False)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a directory: (base URL, directory)."""
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port_url(name: str) -> str:
    with socket.socket() as sock:  # bind then close: nothing listens there afterwards
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _spec(url: str, **kwargs: object) -> WeightsFile:
    return WeightsFile(key="test", filename="test-weights.pth", url=url, used_by=("a test",), **kwargs)  # type: ignore[arg-type]


def _write(path: Path, data: bytes = PAYLOAD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_registry_lists_every_metric_file() -> None:
    files = {key: spec.filename for key, spec in weights.REGISTRY.items()}
    assert files == {"inception": "weights-inception-2015-12-05-6726825d.pth",
                     "alexnet": "alexnet-owt-7be5be79.pth", "vgg16": "vgg16-397923af.pth",
                     "i3d": "i3d_torchscript.pt"}
    for spec in weights.REGISTRY.values():
        assert spec.url.startswith("https://") and spec.used_by
        if spec.hash_prefix:  # the torch hub convention: the prefix is part of the file name
            assert spec.hash_prefix in spec.filename
    with pytest.raises(KeyError, match="key: expected one of .*received 'resnet'"):
        weights.get_weights_file("resnet")


def test_explicit_dir_wins_over_env_var_over_hub_cache(tmp_path: Path, _hub: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    name = "alexnet-owt-7be5be79.pth"
    explicit, env_dir = tmp_path / "explicit", tmp_path / "env"
    for directory in (explicit, env_dir, _hub):
        _write(directory / name)
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(env_dir))
    assert resolve_weights("alexnet", explicit) == explicit / name
    assert resolve_weights("alexnet") == env_dir / name
    (explicit / name).unlink()
    assert resolve_weights("alexnet", explicit) == env_dir / name  # falls through to the next directory
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR)
    assert resolve_weights("alexnet", explicit) == _hub / name
    assert weights.search_dirs(explicit) == [explicit, _hub]


def test_pytorch_fid_file_name_is_accepted_for_inception(tmp_path: Path) -> None:
    path = _write(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    assert resolve_weights("inception", tmp_path) == path


def test_missing_offline_names_file_url_and_directories(tmp_path: Path, _hub: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(tmp_path / "env"))
    monkeypatch.setenv(weights.ENV_OFFLINE, "1")
    with pytest.raises(FileNotFoundError) as info:  # MissingWeightsError is a FileNotFoundError
        resolve_weights("i3d", tmp_path / "mine")
    assert isinstance(info.value, MissingWeightsError)
    message = str(info.value)
    spec = weights.REGISTRY["i3d"]
    for part in (spec.filename, spec.url, str(tmp_path / "mine"), str(tmp_path / "env"), str(_hub),
                 "OPUSCLIP_WEIGHTS_DIR", "opusclip-track weights download i3d", "FVD"):
        assert part in message
    assert not _hub.exists() or not any(_hub.iterdir())


def test_unreachable_url_gives_missing_weights_error_not_random_weights(tmp_path: Path, _hub: Path) -> None:
    spec = _spec(_closed_port_url("test-weights.pth"), sha256="0" * 64)
    with pytest.raises(MissingWeightsError, match="download failed") as info:
        resolve_weights(spec, tmp_path)
    assert spec.filename in str(info.value) and spec.url in str(info.value) and str(_hub) in str(info.value)
    assert not (_hub / spec.filename).exists()


def test_download_from_local_http_server_verifies_sha256_and_lands_in_hub_cache(
        server: tuple[str, Path], _hub: Path, tmp_path: Path) -> None:
    base, root = server
    _write(root / "test-weights.pth")
    spec = _spec(f"{base}/test-weights.pth", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    path = resolve_weights(spec, tmp_path / "empty")  # not on disk: downloaded into the hub cache
    assert path == _hub / "test-weights.pth" and path.read_bytes() == PAYLOAD
    (root / "test-weights.pth").unlink()  # a second resolve finds the cached copy without the server's file
    assert resolve_weights(spec, tmp_path / "empty") == path
    assert verify_weights(spec, path) == hashlib.sha256(PAYLOAD).hexdigest()


def test_download_with_wrong_checksum_is_rejected_and_nothing_is_kept(server: tuple[str, Path], _hub: Path) -> None:
    base, root = server
    _write(root / "test-weights.pth", b"corrupted")
    for checksum in ({"sha256": hashlib.sha256(PAYLOAD).hexdigest()}, {"hash_prefix": "7be5be79"}):
        spec = _spec(f"{base}/test-weights.pth", **checksum)
        with pytest.raises(WeightsChecksumError, match="test-weights.pth: checksum mismatch") as info:
            download_weights(spec)
        assert hashlib.sha256(b"corrupted").hexdigest() in str(info.value)
        assert not _hub.exists() or list(_hub.iterdir()) == []  # no target and no .part file left


def test_hash_prefix_download_over_file_url(tmp_path: Path) -> None:
    source = _write(tmp_path / "src" / "model.pth")
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    spec = _spec(source.as_uri(), hash_prefix=prefix)
    path = download_weights(spec, tmp_path / "dest")
    assert path == tmp_path / "dest" / "test-weights.pth" and path.read_bytes() == PAYLOAD


def test_verify_reports_match_mismatch_and_unverifiable(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.pth")
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert verify_weights(_spec("file:///x", sha256=good), path) == good
    assert verify_weights(_spec("file:///x"), path) is None  # no checksum published: cannot verify
    with pytest.raises(WeightsChecksumError, match=f"expected sha256 {'ab' * 32}, received {good}"):
        verify_weights(_spec("file:///x", sha256="ab" * 32), path)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="opusclip-track")
    add_weights_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_cli_list_shows_found_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = _write(tmp_path / "w" / "alexnet-owt-7be5be79.pth")
    assert _cli("weights", "list", "--weights-dir", str(tmp_path / "w")) == 0
    out = capsys.readouterr().out
    assert f"found: {found}" in out and out.count("MISSING") == 3
    assert "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1" in out


def test_cli_download_from_mirror(server: tuple[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    base, root = server
    _write(root / "i3d_torchscript.pt")
    _write(root / "alexnet-owt-7be5be79.pth", b"not alexnet")
    dest = tmp_path / "dest"
    with pytest.warns(UserWarning, match="no published checksum"):
        assert _cli("weights", "download", "i3d", "--mirror", base, "--dest", str(dest)) == 0
    assert (dest / "i3d_torchscript.pt").read_bytes() == PAYLOAD
    assert _cli("weights", "download", "i3d", "--weights-dir", str(dest)) == 0
    assert "already present" in capsys.readouterr().out
    # A file that does not match the registry's hash prefix is refused, whatever server it comes from.
    assert _cli("weights", "download", "alexnet", "--mirror", base, "--dest", str(dest)) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (dest / "alexnet-owt-7be5be79.pth").exists()


def test_cli_download_unreachable_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mirror = _closed_port_url("").rstrip("/")
    assert _cli("weights", "download", "vgg16", "--mirror", mirror, "--dest", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and "download failed" in err
    assert _cli("weights", "download") == 2
    assert "or --all, received none" in capsys.readouterr().err
    assert _cli("weights", "verify", "resnet") == 2
    assert "received resnet" in capsys.readouterr().err


def test_cli_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wdir = tmp_path / "w"
    _write(wdir / "alexnet-owt-7be5be79.pth", b"random weights")
    _write(wdir / "i3d_torchscript.pt")
    assert _cli("weights", "verify", "alexnet", "--weights-dir", str(wdir)) == 1
    assert "MISMATCH" in capsys.readouterr().err
    assert _cli("weights", "verify", "i3d", "--weights-dir", str(wdir)) == 0
    assert hashlib.sha256(PAYLOAD).hexdigest() in capsys.readouterr().out
    assert _cli("weights", "verify", "vgg16", "--weights-dir", str(wdir)) == 1  # named and missing
    assert "MISSING" in capsys.readouterr().out


def _hub_files(directory: Path, monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    """Put `PAYLOAD` on disk under the registry's file names, and make the registry's checksums those of it
    (no test can write content matching the real files' hash prefixes)."""
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    for key in keys:
        spec = weights.REGISTRY[key]
        if spec.hash_prefix:
            monkeypatch.setitem(weights.REGISTRY, key, dataclasses.replace(spec, hash_prefix=prefix))
        _write(directory / spec.filename)


def test_cli_verify_without_keys_requires_the_default_metrics_files(
        _hub: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("weights", "verify") == 1  # nothing on disk
    captured = capsys.readouterr()
    assert "inception: MISSING" in captured.out and "vgg16: not present" in captured.out
    assert "3 required file(s) missing: inception, alexnet, i3d" in captured.err
    assert "opusclip-track weights download inception alexnet i3d" in captured.err
    _hub_files(_hub, monkeypatch, "inception", "alexnet", "i3d")
    assert _cli("weights", "verify") == 0  # vgg16 (LPIPS net='vgg' only) is optional
    assert "optional" in capsys.readouterr().out
    assert _cli("weights", "verify", "--all") == 1  # now it is required too
    assert "vgg16: MISSING" in capsys.readouterr().out


def test_cli_verify_with_metrics_requires_only_their_files(
        _hub: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _hub_files(_hub, monkeypatch, "alexnet")
    assert _cli("weights", "verify", "--metrics", "psnr,lpips") == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("alexnet: OK")
    assert _cli("weights", "verify", "--metrics", "lpips,fvd") == 1
    assert "1 required file(s) missing: i3d" in capsys.readouterr().err
    assert _cli("weights", "verify", "--metrics", "psnr,ssim") == 0  # these load no weights
    with pytest.raises(SystemExit):  # argparse: a usage error
        _cli("weights", "verify", "--metrics", "bleu")


def test_hub_dir_follows_torch(_hub: Path) -> None:
    assert weights.hub_checkpoints_dir() == Path(torch.hub.get_dir()) / "checkpoints" == _hub


@pytest.mark.parametrize("env", [{"TORCH_HOME": "{tmp}/th"}, {"XDG_CACHE_HOME": "{tmp}/xdg"}, {"HOME": "{tmp}/home"}])
def test_hub_dir_without_torch_is_the_one_torch_uses(env: dict[str, str], tmp_path: Path) -> None:
    """`weights list` finds the hub cache without importing torch, at the directory torch itself would use."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")}
    clean.update({k: v.format(tmp=tmp_path) for k, v in env.items()})
    code = ("import sys\nfrom opusclip_track.metrics import weights\nours = weights.hub_checkpoints_dir()\n"
            "assert 'torch' not in sys.modules\nimport torch\n"
            "print(ours == weights.hub_checkpoints_dir() == Path(torch.hub.get_dir()) / 'checkpoints', ours)")
    done = subprocess.run([sys.executable, "-c", "from pathlib import Path\n" + code], env=clean,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"True {tmp_path}")
