import pytest


@pytest.fixture(autouse=True)
def _forget_datasets_registered_by_the_test():
    """Detectron2's DatasetCatalog and MetadataCatalog are process-wide: a dataset a test
    registered (and the metadata its loading recorded, such as thing_classes) would meet the next
    test that uses the name, so that the suite's result depended on its order. Each test starts
    with the catalogs as its fixtures left them and leaves them so."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    datasets, metadata = set(DatasetCatalog.keys()), set(MetadataCatalog.keys())
    yield
    for name in set(DatasetCatalog.keys()) - datasets:
        DatasetCatalog.remove(name)
    for name in set(MetadataCatalog.keys()) - metadata:
        MetadataCatalog.remove(name)


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
