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


@pytest.fixture(scope="module")
def mnist():
    """The shipped mnist model as the page offers it (the web tests)."""
    from diffuscope.web.lesson import load_entry

    return load_entry("mnist")


@pytest.fixture
def client(mnist, tmp_path):
    """A TestClient of the page on ``mnist`` (the web tests)."""
    from web_helpers import make_client

    with make_client(mnist, tmp_path / "out") as c:
        yield c


@pytest.fixture
def gated(mnist, tmp_path):
    """A client whose one model is the shipped mnist behind a Gate; yields (client, gate)."""
    import dataclasses

    from web_helpers import Gate, make_client

    gate = Gate(mnist.model.denoiser)
    entry = dataclasses.replace(mnist, model=dataclasses.replace(mnist.model, denoiser=gate))
    with make_client(entry, tmp_path / "out") as c:
        yield c, gate
