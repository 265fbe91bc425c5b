import pytest


@pytest.fixture
def tiny_cfg():
    """The paper's config on a tiny ResNet-18-FPN with 32 channels, 3 classes, CPU."""
    from tests.utils import tiny_config

    return tiny_config()
