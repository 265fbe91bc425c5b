import pytest


@pytest.fixture
def tiny_cfg():
    """The paper's config on a tiny ResNet-18-FPN with 32 channels, 3 classes, CPU."""
    from tests.utils import tiny_config

    return tiny_config()


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """The quick start trained 4 steps on 64 px shapes (tests.utils.tiny_overrides) and evaluated
    (default COCO backend): (root, its KEY VALUE options with MODEL.WEIGHTS, its results), the run
    in root / "train". Shared by the train_net, export, evaluation and TTA tests: do not write
    into root."""
    from tests.utils import QUICKSTART, parse, run_main, tiny_overrides

    root = tmp_path_factory.mktemp("tiny_trained")
    opts = tiny_overrides(root / "shapes", root / "train")
    results = run_main(parse("--config-file", QUICKSTART, *opts))
    return root, opts + ["MODEL.WEIGHTS", str(root / "train" / "model_final.pth")], results
