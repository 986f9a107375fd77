"""torchvision weights fetched into torch hub's cache: one line offline, loaded from the cache after."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from convscope.cli import main
from convscope.errors import WeightsError
from convscope.nets import clear_net_cache, get_net
from convscope.nets.download import cached_weights_path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub folder, and a record of the downloads asked for."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    clear_net_cache()
    yield tmp_path / "hub"
    clear_net_cache()


def offline(calls):
    def download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    return download


def test_offline_is_one_line_for_torchvision_classifiers_and_vgg(hub, monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline(calls))
    with pytest.raises(WeightsError, match=r"^cannot get torchvision resnet18 weights \(URLError: .*resnet18:random\)$"):
        get_net("resnet18")
    with pytest.raises(WeightsError, match=r"^cannot get torchvision vgg19 weights .*--net vgg19 \(bundled\)$"):
        get_net("vgg19-torchvision")
    assert len(calls) == 2 and not list(hub.rglob("*.pth"))
    # Through the CLI: torch hub wrote 'Downloading: URL to PATH' to stdout before it tried (where
    # `explain --json` writes its JSON), so offline there were two lines.
    from PIL import Image

    Image.new("RGB", (40, 32), (90, 120, 30)).save(tmp_path / "in.png")
    capsys.readouterr()
    assert main(["activations", str(tmp_path / "in.png"), "--net", "resnet18", "--layer", "layer1",
                 "-o", str(tmp_path / "out.png")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("convscope: error: cannot get torchvision"), \
        captured.err
    assert captured.out == ""
    assert not (tmp_path / "out.png").exists()


def test_weights_download_once_into_the_hub_cache_and_load_from_there(hub, monkeypatch):
    import torchvision

    saved = torchvision.models.resnet18().state_dict()  # random weights standing in for ImageNet's
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save(saved, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    net = get_net("resnet18")
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    assert calls == [(url, "f37072fd")]  # the hash its file name carries is checked
    assert cached_weights_path(url) == hub / "checkpoints" / "resnet18-f37072fd.pth"
    assert cached_weights_path(url).is_file()
    loaded = dict(net.model.named_parameters())
    assert torch.equal(loaded["conv1.weight"], saved["conv1.weight"])
    clear_net_cache()
    get_net("resnet18")
    assert len(calls) == 1  # the second time from the cache


def test_a_corrupt_cached_file_says_which_file_to_delete(hub, monkeypatch):
    import torchvision

    path = cached_weights_path(torchvision.models.ResNet18_Weights.DEFAULT.url)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline([]))
    with pytest.raises(WeightsError, match=rf"^cannot load torchvision resnet18 weights .*delete {path} to download"):
        get_net("resnet18")
