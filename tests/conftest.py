import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny digits model trained for a few steps: a real checkpoint for CLI and pipeline tests."""
    from diffuscope.training import train
    from helpers import tiny_config

    run = tmp_path_factory.mktemp("tiny") / "run"
    train(tiny_config(max_steps=10), run)
    return run


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module of tiny models (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on a shared 2-core machine two OpenMP threads can be several times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def ckpt(tiny_model, tmp_path):
    """A private copy of the tiny model's newest checkpoint, free to damage."""
    import shutil

    from diffuscope.io.checkpoint import list_checkpoints

    src = list_checkpoints(tiny_model / "checkpoints")[-1]
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst
