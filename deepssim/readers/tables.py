"""The CSV files the tool reads (pair files of both formats, the benchmark's tables, the
pairs to score), read one way: UTF-8 with or without a byte-order mark (as spreadsheet
programs save it), column names stripped of surrounding spaces, and every failure a
ValueError that names the file (and the line where there is one).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

#: UTF-8 that drops a leading byte-order mark ("\ufeffreal" would not be the column "real").
ENCODING = "utf-8-sig"


@contextmanager
def open_csv(path: str | Path, *, what: str = "file") -> Iterator[TextIO]:
    """The CSV file opened for ``csv.reader`` / ``csv.DictReader`` (UTF-8, optional BOM); a
    decoding or CSV error inside the block becomes a ValueError naming the file.

    Raises:
        FileNotFoundError: no such file (``what`` names it in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        with open(path, newline="", encoding=ENCODING) as fh:
            yield fh
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV file: {exc}") from None


def read_header(path: str | Path, *, what: str = "file") -> list[str]:
    """The column names of a CSV file (its first row), stripped; ``[]`` for an empty file.

    Raises:
        FileNotFoundError: no such file (``what`` names it in the message).
        ValueError: not UTF-8 or not CSV, naming the file.
    """
    path = Path(path)
    with open_csv(path, what=what) as fh:
        return [name.strip() for name in next(csv.reader(fh), [])]


def read_table(
    path: str | Path, required: Sequence[str] = (), *, what: str = "file", rows_name: str = "rows"
) -> tuple[list[str], list[dict[str, str]]]:
    """The column names and the rows (dicts by column) of a CSV file that has the
    ``required`` columns and at least one row. Line ``k + 2`` of the file holds ``rows[k]``
    (for rows without line breaks inside quotes).

    Raises:
        FileNotFoundError: no such file (``what`` names it in the message).
        ValueError: not UTF-8 or not CSV, a missing column, or no row (``no <rows_name>``),
            naming the file.
    """
    path = Path(path)
    with open_csv(path, what=what) as fh:
        reader = csv.DictReader(fh)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        missing = [column for column in required if column not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no {rows_name}")
    return header, rows
