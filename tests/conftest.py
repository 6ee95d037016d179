import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def emoji_cache(tmp_path_factory):
    """One small emoji-zh-en cache shared by every test that needs real renders."""
    return tmp_path_factory.mktemp("emoji-cache")
