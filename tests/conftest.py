import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: one thread each (and in the CLI runs they spawn), because
    # OpenMP threads of two workers fighting over the same cores slow both down many times over.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# Seconds each test file takes in `make test` on the 2-core reference host (measured with
#   make test PYTEST_WORKERS="-n 2 --dist loadfile --no-loadscope-reorder --durations=0"
# and summed per file). A file runs whole in one xdist worker and files are handed out in collection order, so the
# longest go first and the short ones fill the gaps at the end (longest-processing-time-first scheduling): sorted
# alphabetically, the suite took 520 s of its 908 s of tests over two workers; longest first, 465 s of 896 s.
# (2026-12-07, with the issue-19 fuzz tests: 1,017 s of tests.) Unlisted files count as 1 s.
FILE_SECONDS = {
    "test_qat_export.py": 133, "test_exact_runs.py": 140, "test_search.py": 114, "test_quant_schemes.py": 70,
    "test_bundle.py": 110, "test_e2e.py": 76, "test_ethosu.py": 70, "test_quant_schemes_text.py": 40,
    "test_cli.py": 38, "test_teacher_cache.py": 40, "test_stages.py": 21, "test_qat_vs_ptq.py": 19,
    "test_streaming.py": 17, "test_fuzz_inputs.py": 17, "test_teacher_hf.py": 15, "test_loop.py": 12,
    "test_stage1_options.py": 10, "test_pte_check.py": 8, "test_android_core.py": 8, "test_latency_table.py": 7,
    "test_texts.py": 6, "test_tokenizer.py": 6, "test_api.py": 30, "test_coreml.py": 12, "test_android_build.py": 3,
}


def pytest_collection_modifyitems(config, items):
    """Longest files first (see FILE_SECONDS); the sort is stable, so tests keep their order within a file."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 1.0))


@pytest.fixture(scope="session")
def emoji_cache(tmp_path_factory):
    """One small emoji-zh-en cache shared by every test that needs real renders."""
    return tmp_path_factory.mktemp("emoji-cache")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny random student checkpoint exported through the real CLI into an app bundle (fp32, three labels from a
    .tsv): shared by tests/test_bundle.py and tests/test_pte_check.py (read-only: tests copy it before changing it).
    Returns (bundle folder, labels file)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # built once for both workers (the files using it land on either)
        from filelock import FileLock

        root = tmp_path_factory.getbasetemp().parent / "tiny-bundle"
        with FileLock(str(root) + ".lock"):
            if not (root / "done").is_file():
                shutil.rmtree(root, ignore_errors=True)
                _build_tiny_bundle(root)
                (root / "done").touch()
        return root / "bundle", root / "labels.tsv"
    root = tmp_path_factory.mktemp("bundle")
    _build_tiny_bundle(root)
    return root / "bundle", root / "labels.tsv"


def _build_tiny_bundle(root) -> None:
    from click.testing import CliRunner

    from compress.cli import main
    from compress.model import DualEncoder, DualEncoderSpec, save_checkpoint
    from compress.tokenizer import BilingualTokenizer, train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    labels = root / "labels.tsv"
    labels.write_text("id\ten\tzh\n1\tdog face\t狗脸\n2\tred apple\t红苹果\n3\tcar\t汽车\n", encoding="utf-8")
    words = ["an emoji of dog face", "an emoji of red apple", "car", "狗脸的表情符号", "红苹果的表情符号", "汽车"]
    tokenizer = BilingualTokenizer(train_tokenizer(words * 3, 200), 16)
    torch.manual_seed(0)
    model = DualEncoder(DualEncoderSpec("vit_pico_p8", "text_pico", 32, 32, 16, tokenizer.vocab_size))
    save_checkpoint(model, tokenizer, root / "ckpt")
    res = CliRunner().invoke(main, ["export", str(root / "ckpt"), "--quant", "fp32", "--out", str(root / "bundle"),
                                    "--labels", str(labels)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
