"""The demo's logic (retina_plugin/demo.py): which files it reads and the COCO results it writes.
tools/demo.py on a trained model runs in tests/engine/test_train_net.py."""

import pytest
import torch
from detectron2.structures import Boxes, Instances

from retina_plugin.demo import detections_to_coco, list_images


def test_list_images_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        list_images([str(tmp_path / "nowhere")])
    assert (
        str(error.value) == f"--input {str(tmp_path / 'nowhere')!r} is neither a file nor a folder."
    )


def test_list_images_of_files_and_folders(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("b.JPG", "a.png", "notes.txt", "c.webp"):  # sorted; extensions in any case
        (folder / name).write_bytes(b"")
    named = tmp_path / "named.dat"  # a file named on the command line is taken as it is
    named.write_bytes(b"")
    assert list_images([str(named), str(folder)]) == [
        str(named),
        *(str(folder / n) for n in ("a.png", "b.JPG", "c.webp")),
    ]


def test_detections_to_coco():
    instances = Instances((20, 30))
    instances.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 11.0, 7.0], [0.0, 0.0, 3.0, 4.0]]))
    instances.scores = torch.tensor([0.75, 0.5])
    instances.pred_classes = torch.tensor([0, 2])
    assert detections_to_coco(instances, "img.png", {0: 7}) == [
        {"file_name": "img.png", "category_id": 7, "bbox": [1.0, 2.0, 10.0, 5.0], "score": 0.75},
        {"file_name": "img.png", "category_id": 2, "bbox": [0.0, 0.0, 3.0, 4.0], "score": 0.5},
    ]
    assert detections_to_coco(instances[:0], "img.png", {0: 7}) == []
