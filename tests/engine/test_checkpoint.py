import logging
import os

import pytest
import torch

from retina_plugin.engine import SafeCheckpointer


@pytest.fixture
def checkpointer(tmp_path, monkeypatch):
    # train_net's logger set-up (if a test ran it before) stops "retina_plugin" records.
    monkeypatch.setattr(logging.getLogger("retina_plugin"), "propagate", True)
    model = torch.nn.Linear(3, 2)
    return SafeCheckpointer(model, save_dir=str(tmp_path))


def _tag(checkpointer, text):
    with open(os.path.join(checkpointer.save_dir, "last_checkpoint"), "w") as f:
        f.write(text)


def test_save_is_atomic(checkpointer, monkeypatch):
    checkpointer.save("model_0000009", iteration=9)
    real_save = torch.save

    def crash_mid_write(data, f):
        real_save(data, f)
        f.truncate(10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="No space left on device"):
        checkpointer.save("model_0000019", iteration=19)
    # Neither a truncated model_0000019.pth nor a temporary file is left behind, and
    # last_checkpoint still names the complete checkpoint.
    assert sorted(os.listdir(checkpointer.save_dir)) == ["last_checkpoint", "model_0000009.pth"]
    assert checkpointer.get_checkpoint_file().endswith("model_0000009.pth")
    assert torch.load(checkpointer.get_checkpoint_file(), weights_only=True)["iteration"] == 9


def test_resume_falls_back_to_newest_complete_checkpoint(checkpointer, caplog):
    checkpointer.save("model_0000004", iteration=4)
    checkpointer.save("model_0000009", iteration=9)
    save_dir = checkpointer.save_dir
    with open(os.path.join(save_dir, "model_0000009.pth"), "r+b") as f:
        f.truncate(100)  # as a crash mid-save (without atomic writes) would leave it
    tag_file = os.path.join(save_dir, "last_checkpoint")
    with caplog.at_level(logging.WARNING):
        assert checkpointer.get_checkpoint_file() == os.path.join(save_dir, "model_0000004.pth")
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "retina_plugin.engine.checkpoint"
    ]
    assert warnings == [
        f"--resume: {tag_file} names 'model_0000009.pth', which is missing or incomplete; "
        f"resuming from {os.path.join(save_dir, 'model_0000004.pth')} instead."
    ]
    for broken_tag in ("", "model_0000123.pth"):
        _tag(checkpointer, broken_tag)
        assert checkpointer.get_checkpoint_file().endswith("model_0000004.pth")
    os.remove(tag_file)  # checkpoints without last_checkpoint: still a resume
    assert checkpointer.has_checkpoint()
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 4


def test_resume_without_any_complete_checkpoint(checkpointer):
    _tag(checkpointer, "model_0000009.pth")
    tag_file = os.path.join(checkpointer.save_dir, "last_checkpoint")
    with pytest.raises(FileNotFoundError) as error:
        checkpointer.get_checkpoint_file()
    assert str(error.value) == (
        f"--resume: {tag_file} names 'model_0000009.pth', which is missing or incomplete, and "
        f"{checkpointer.save_dir!r} holds no complete checkpoint to fall back to. Delete "
        "last_checkpoint to start from iteration 0."
    )


def test_last_checkpoint_outside_output_dir_is_refused(checkpointer, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "model_final.pth"
    torch.save({"model": {}}, outside)
    _tag(checkpointer, str(outside))
    with pytest.raises(ValueError) as error:
        checkpointer.get_checkpoint_file()
    assert str(error.value).startswith(
        f"{os.path.join(checkpointer.save_dir, 'last_checkpoint')} names"
    )
    assert "outside OUTPUT_DIR" in str(error.value)
