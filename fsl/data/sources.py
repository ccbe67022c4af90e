"""Where a split's images come from: the DLCV HW4 CSV layout or a plain ImageFolder tree.

A source is only a list of (id, image path, label name); decoding happens in `fsl.data.decoded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
HW4_COLUMNS = ("id", "filename", "label")


@dataclass(frozen=True)
class SplitSource:
    """The images of one split, in file order, with the file they were listed in (for error messages)."""

    name: str
    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    listed_in: Path

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Label names in order of first appearance, so class indices follow the file."""
        return tuple(dict.fromkeys(self.labels))


def detect_layout(root: Path) -> str:
    """'hw4' when ROOT/train.csv exists, 'imagefolder' when ROOT/train/ holds class folders."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    if (root / "train.csv").is_file():
        return "hw4"
    train = root / "train"
    if train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        return "imagefolder"
    raise FileNotFoundError(
        f"{root}: expected the HW4 layout (train.csv, val.csv, train/, val/) "
        "or an ImageFolder tree (train/<class>/*.jpg, val/<class>/*.jpg)"
    )


def read_split(root: Path, split: str) -> SplitSource:
    """Read one split of either layout."""
    if detect_layout(root) == "hw4":
        return read_hw4_split(root, split)
    return read_image_folder_split(root, split)


def read_hw4_split(root: Path, split: str) -> SplitSource:
    """ROOT/<split>.csv with columns id,filename,label; images in ROOT/<split>/<filename>."""
    root = Path(root)
    csv_path = root / f"{split}.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: split file not found (expected columns id,filename,label)")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{csv_path}: not a readable CSV ({err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in HW4_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; expected id,filename,label, "
            f"found {','.join(table.columns)}"
        )
    if table.empty:
        raise ValueError(f"{csv_path}: the split is empty (no rows after the header)")
    for column in HW4_COLUMNS:
        blank = table.index[table[column].str.strip() == ""]
        if len(blank):
            raise ValueError(f"{csv_path}: row {blank[0] + 2}: empty '{column}'")
    duplicated = table.index[table["id"].duplicated()]
    if len(duplicated):
        row = duplicated[0]
        raise ValueError(f"{csv_path}: row {row + 2}: duplicate id {table['id'][row]!r}")
    image_dir = root / split
    paths = tuple(image_dir / name for name in table["filename"])
    for row, path in enumerate(paths):
        if not path.is_file():
            raise FileNotFoundError(f"{csv_path}: row {row + 2}: image file {path} not found")
    return SplitSource(
        name=split,
        ids=tuple(table["id"]),
        paths=paths,
        labels=tuple(table["label"]),
        listed_in=csv_path,
    )


def read_image_folder_split(root: Path, split: str) -> SplitSource:
    """ROOT/<split>/<class>/<image>; ids are the paths relative to ROOT/<split>."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: split folder not found (expected {split}/<class>/<images>)")
    ids: list[str] = []
    paths: list[Path] = []
    labels: list[str] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for path in sorted(class_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                ids.append(f"{class_dir.name}/{path.name}")
                paths.append(path)
                labels.append(class_dir.name)
    if not ids:
        raise ValueError(f"{split_dir}: the split is empty (no images in {split}/<class>/)")
    return SplitSource(name=split, ids=tuple(ids), paths=tuple(paths), labels=tuple(labels), listed_in=split_dir)
