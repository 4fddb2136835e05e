"""Shared pytest setup: offline, isolated HF caches, and the `--runslow` switch for tests marked `slow`."""

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch


# Isolate every Hugging Face cache (hub, datasets, remote-code modules, evaluate modules) in a temp dir
# and run offline, before any HF library is imported by a test module.
_HF_HOME = tempfile.mkdtemp(prefix="hf_gru_attn_tests_hf_home_")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with `pytest --runslow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op torch thread per test: the models here are tiny, and on a busy machine extra threads only spin
    (tests measured 30x slower with two threads on shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_script():
    """`scripts/train.py` imported as a module (its `main` is not run on import)."""
    spec = importlib.util.spec_from_file_location("train_script_under_test", REPO_ROOT / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    spec.loader.exec_module(module)
    sys.path[:] = path  # the script edits sys.path on import
    return module


@pytest.fixture
def shared_data():
    """Path to `../shared/data` (larger real corpora); skips the test when it is not beside the checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside this checkout")
    return SHARED_DATA
