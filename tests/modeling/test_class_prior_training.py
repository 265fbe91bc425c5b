"""MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY through train_net's Trainer on tiny shapes data."""

import torch
from detectron2.data import DatasetCatalog

from retina_plugin.engine import Trainer, setup
from retina_plugin.modeling.priors import class_frequency_priors, classification_bias
from tests.utils import QUICKSTART, parse, tiny_overrides


def _class_biases(trainer, num_logits):
    head = trainer.checkpointer.model.head
    return head.cls_score.bias.detach().view(-1, num_logits).double()


def test_trainer_starts_from_the_class_frequency_prior(tmp_path):
    overrides = tiny_overrides(tmp_path / "shapes", tmp_path / "out")
    overrides += ["MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY", "True"]
    trainer = Trainer(setup(parse("--config-file", QUICKSTART, *overrides)))
    priors = class_frequency_priors(DatasetCatalog.get("shapes_train"), 8, 0.01)
    # The shapes classes have uneven frequencies, so the biases differ per class.
    assert priors.max() > 1.5 * priors.min()
    expected = classification_bias(priors, background_logit=False).float().double()
    biases = _class_biases(trainer, 8)
    torch.testing.assert_close(biases, expected.expand_as(biases))


def test_softmax_loss_gets_the_prior_with_a_background_logit(tmp_path):
    overrides = tiny_overrides(tmp_path / "shapes", tmp_path / "out")
    overrides += [
        "MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY", "True",
        "MODEL.FOCAL_RETINA.LOSS_NAME", "SoftmaxFocalLoss",
    ]  # fmt: skip
    trainer = Trainer(setup(parse("--config-file", QUICKSTART, *overrides)))
    priors = class_frequency_priors(DatasetCatalog.get("shapes_train"), 8, 0.01)
    probabilities = torch.softmax(_class_biases(trainer, 9), dim=1)
    expected = torch.cat([priors / 8, torch.tensor([0.99], dtype=torch.float64)])
    torch.testing.assert_close(
        probabilities, expected.expand_as(probabilities), rtol=1e-5, atol=1e-7
    )
