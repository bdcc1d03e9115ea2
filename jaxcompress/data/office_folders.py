"""Closed-set domain-adaptation benchmarks read from their standard local folders.

Registered sources (`config.data.name`, with `config.data.data_dir` the folder that holds the
dataset folder and `source_kwargs.domain` the domain):

  * "office31": Office-31 (Saenz et al., ECCV 2010), 31 classes in three domains "amazon",
    "dslr", "webcam"; layout `<data_dir>/office31/<domain>/images/<class>/<file>.jpg` (the
    archive's `domain_adaptation_images/` folder may stand in for `office31/`).
  * "office_home": Office-Home (Venkateswara et al., CVPR 2017), 65 classes in four domains
    "Art", "Clipart", "Product", "Real_World"; layout
    `<data_dir>/OfficeHome/<domain>/<class>/<file>.jpg` (the archive's
    `OfficeHomeDataset_10072016/` may stand in for `OfficeHome/`).

The unsupervised adaptation protocol of these benchmarks (used by DTDN, arXiv 2007.13264, and the
papers it compares with) trains on every labelled image of the source domain and every unlabelled
image of the target domain, and reports accuracy on every target image: the splits "train",
"test" and "all" are therefore the whole domain. Class labels are the class folders in sorted
order (torchvision's `ImageFolder`, which the official code uses), the same in every domain.

Examples are `{"image": uint8 (H, W, 3), "label": class}`; images are decoded with PIL when an
example is read and resized (bicubic) to `image_size` = (height, width), (224, 224) by default;
None keeps each file's size.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from jaxcompress.data import reid_folders, sources
from jaxcompress.errors import ConfigError

DEFAULT_SIZE = (224, 224)
SPLITS = ("train", "test", "all")
OFFICE31_DOMAINS = ("amazon", "dslr", "webcam")
OFFICE_HOME_DOMAINS = ("Art", "Clipart", "Product", "Real_World")


class ClassFolderImages:
  """Image files with class labels (one domain of a closed-set benchmark).

  Attributes:
    paths: the image files.
    labels: (N,) int64 classes.
    classes: class names, index = label.
    num_classes: len(classes).
    image_size: (height, width) of the decoded images, or None for the files' own sizes.
  """

  def __init__(self, paths: Sequence[str], labels: Any, classes: Sequence[str],
               image_size: Sequence[int] | None = DEFAULT_SIZE):
    self.paths = list(paths)
    self.labels = np.asarray(labels, np.int64).reshape(-1)
    if len(self.paths) != len(self.labels):
      raise ValueError(f"{len(self.paths)} paths and {len(self.labels)} labels: give one label "
                       "per image.")
    self.classes = tuple(classes)
    self.num_classes = len(self.classes)
    self.image_size = reid_folders.check_size(image_size)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    return {"image": reid_folders.load_image(self.paths[index], self.image_size),
            "label": int(self.labels[index])}


def read_class_folders(folder: str, image_size: Sequence[int] | None = DEFAULT_SIZE
                       ) -> ClassFolderImages:
  """Every image in `folder/<class>/`, labelled by the sorted class-folder names.

  Raises:
    ConfigError: a folder without class folders or without images.
  """
  classes = sorted(n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n)))
  if not classes:
    raise ConfigError(f"{folder!r} has no class folders: expected {folder}/<class>/<image>.")
  paths, labels = [], []
  for label, name in enumerate(classes):
    files = reid_folders.list_images(os.path.join(folder, name))
    paths += files
    labels += [label] * len(files)
  if not paths:
    raise ConfigError(f"The class folders under {folder!r} hold no images "
                      f"({', '.join(reid_folders.IMAGE_EXTENSIONS)}).")
  return ClassFolderImages(paths, labels, classes, image_size)


def _check(split: str, domain: str, domains: Sequence[str], title: str) -> None:
  if split not in SPLITS:
    raise ConfigError(f"{title} has splits {SPLITS} (each the whole domain, the unsupervised "
                      f"adaptation protocol); got {split!r}.")
  if domain not in domains:
    raise ConfigError(f"{title} has domains {tuple(domains)}; set source_kwargs.domain to one "
                      f"of them (got {domain!r}).")


def office31(split: str, data_dir: str | None = None, domain: str = "amazon",
             image_size: Sequence[int] | None = DEFAULT_SIZE) -> ClassFolderImages:
  """One domain of Office-31 (module docstring)."""
  _check(split, domain, OFFICE31_DOMAINS, "Office-31")
  root = reid_folders.dataset_root(
      data_dir, "Office-31", ("office31", "Office31", "domain_adaptation_images"),
      [os.path.join(d, "images") for d in OFFICE31_DOMAINS],
      "office31/{amazon,dslr,webcam}/images/<class>/<image>.jpg")
  return read_class_folders(os.path.join(root, domain, "images"), image_size)


def office_home(split: str, data_dir: str | None = None, domain: str = "Art",
                image_size: Sequence[int] | None = DEFAULT_SIZE) -> ClassFolderImages:
  """One domain of Office-Home (module docstring)."""
  _check(split, domain, OFFICE_HOME_DOMAINS, "Office-Home")
  root = reid_folders.dataset_root(
      data_dir, "Office-Home", ("OfficeHome", "office_home", "OfficeHomeDataset_10072016"),
      OFFICE_HOME_DOMAINS, "OfficeHome/{Art,Clipart,Product,Real_World}/<class>/<image>.jpg")
  return read_class_folders(os.path.join(root, domain), image_size)


BUILDERS = {"office31": office31, "office_home": office_home}
for _name, _builder in BUILDERS.items():
  sources.register(_name, _builder)
