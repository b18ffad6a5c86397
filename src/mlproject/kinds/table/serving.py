"""The server's side of the table kind (torch-free): one ONNX input per column, raw rows.

The same protocol as every kind's `serving` module (see mlproject.kinds.images.serving):
`bind(card, inputs)` -> an object with spec, inputs, warmup, decode_infer, read_predict,
batch_items, log_options and submit_log.

Requests carry raw values; the ONNX graph does the spec's preprocessing itself (contract 4):
a numeric column is FP32 [N, 1] with NaN for missing, a categorical column a string [N, 1]
with "" for missing. Clients send:

* /v2/models/<name>/infer: one input per column, in any order, shape [N, 1] or [N]; FP32 as
  JSON numbers (null or NaN: missing) or little-endian float32 (binary extension, NaN: missing);
  BYTES as JSON strings (null: missing) or 4-byte-length-prefixed strings (binary extension).
  MLServer's `parameters.content_type: "pd"` convention is this shape, so its clients work too.
* /predict: `{"rows": [{"column": value, ...}, ...]}` or CSV files (multipart, a header row).

A row's own id (serve.ids: what joins its prediction-log record to ground truth later) is its
`id` field (JSON: a string or an integer) or `id` column (CSV, Parquet, `make predict`), unless
the model takes a column called `id`: then it is a feature like any other.

Values are matched as training matched them (`values.category_value`: 4 and "4" are one
category), so a row scores the same through every route and `make predict`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...serve.errors import RequestError
from ...serve.ids import MAX_LENGTH as MAX_ID_LENGTH
from ...serve.parsing import INT_ONLY
from .values import CATEGORICAL, MISSING_CATEGORY, NUMERIC, category_value

FP32 = np.dtype("<f4")
FP32_MAX = float(np.finfo(np.float32).max)
DATATYPE = {NUMERIC: "FP32", CATEGORICAL: "BYTES"}
# Text a CSV cell holds for a missing number (pandas' defaults, the usual ones).
MISSING_TEXT = frozenset(["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "-"])
_NUMBER_TYPES = frozenset([int, float, type(None)])
ID_COLUMN = "id"  # a row's own id, when the model does not take a column of that name
# A number beyond float32's range becomes inf and is rejected by name; numpy's warning about the
# cast says nothing more.
warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning, __name__)


def bind(card: dict[str, Any], inputs: list) -> TableServing:
    """The table side of a loaded model; ValueError unless the graph has exactly one [-1, 1]
    input per spec column, FP32 for numeric and BYTES (tensor(string)) for categorical."""
    spec = card["input"]
    by_name = {t.name: t for t in inputs}
    ordered = []
    for column in spec["columns"]:
        name, want = column["name"], DATATYPE[column["type"]]
        got = by_name.pop(name, None)
        if got is None:
            raise ValueError(f"the graph has no input for column {name!r} of the card's spec")
        if got.datatype != want or len(got.shape) != 2 or got.shape[1] not in (1, -1):
            raise ValueError(
                f"input {name!r}: expected {want} [-1, 1] for a {column['type']} column, "
                f"got {got.datatype} {got.shape}"
            )
        ordered.append(got)
    if by_name:
        raise ValueError(f"the graph has inputs {sorted(by_name)} that the card's spec lacks")
    return TableServing(spec, ordered)


def _flat(data: list) -> list:
    """[[v], [v], ...] or [v, v, ...] -> [v, v, ...] (rows of one column)."""
    if data and type(data[0]) is list:
        out = []
        for row in data:
            if type(row) is not list:
                raise TypeError
            out.extend(row)
        return out
    return data


def _bytes_elements(blob: bytes, count: int, where: str) -> list[str]:
    """The binary extension's BYTES tensor: per element a 4-byte little-endian length, then
    the bytes (UTF-8)."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(blob):
            raise RequestError(400, f"{where}: BYTES data ends before element {len(out)}")
        size = int.from_bytes(blob[pos : pos + 4], "little")
        pos += 4
        if pos + size > len(blob):
            raise RequestError(400, f"{where}: BYTES element {len(out)} runs past the data")
        try:
            out.append(blob[pos : pos + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, f"{where}: BYTES element {len(out)} is not UTF-8") from None
        pos += size
    if pos != len(blob):
        raise RequestError(400, f"{where}: {len(blob) - pos} bytes beyond its {count} elements")
    return out


def number(value: Any, where: str) -> float:
    """A numeric cell from JSON: a number, or None (missing: NaN)."""
    if value is None:
        return math.nan
    if type(value) not in (int, float):
        raise RequestError(400, f"{where}: expected a number or null, got {value!r}")
    if abs(value) > FP32_MAX:
        raise RequestError(400, f"{where}: {value!r} is beyond FP32's range")
    return value


def number_text(text: str, where: str) -> float:
    """A numeric cell from CSV text (MISSING_TEXT: missing)."""
    text = text.strip()
    if text in MISSING_TEXT:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise RequestError(400, f"{where}: expected a number, got {text!r}") from None
    if abs(value) > FP32_MAX:
        raise RequestError(400, f"{where}: {text!r} is beyond FP32's range (or infinite)")
    return value


def category(value: Any, where: str) -> str:
    """A categorical cell from JSON: a string, number or boolean as training matched it, or
    None (missing)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return category_value(value)
    raise RequestError(400, f"{where}: expected a string, number, boolean or null, got {value!r}")


def category_text(text: str) -> str:
    """A categorical cell from CSV text, as pandas would have read it in prepare: "4" and
    "4.0" are both the number 4, category "4"; an empty cell is missing."""
    text = text.strip()
    if text == "":
        return MISSING_CATEGORY
    try:
        return category_value(int(text))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return category_value(value) if math.isfinite(value) else text


PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "CSV files with a header row naming the columns",
                        }
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["rows"],
                    "properties": {
                        "rows": {
                            "type": "array",
                            "description": "one object per row: column -> number, string or "
                            "null (missing); GET /v2/models/{name} lists the columns",
                            "items": {"type": "object"},
                        }
                    },
                }
            },
        },
    }
}


class TableServing:
    # tritonclient writes np.nan as the NaN literal in JSON mode: read it as a missing number.
    nan_literals = True
    predict_doc = PREDICT_DOC

    def __init__(self, spec: dict[str, Any], inputs: list):
        self.spec = spec
        self.inputs = inputs
        self.columns = list(spec["columns"])
        self.names = [c["name"] for c in self.columns]
        self.numeric = [c["type"] == NUMERIC for c in self.columns]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.target = spec.get("target")
        # Columns a request may carry that are not features: the target (ignored), the id.
        self.id_column = ID_COLUMN if ID_COLUMN not in self.index else None
        self.extra = {c for c in (self.target, self.id_column) if c is not None}
        # name -> (position, datatype, is numeric), for the usual request's checks
        self.usual = {
            name: (i, "FP32" if numeric else "BYTES", numeric)
            for i, (name, numeric) in enumerate(zip(self.names, self.numeric, strict=True))
        }

    # --------------------------------------------------------------- model
    def warmup(self, n: int) -> dict[str, np.ndarray]:
        return {
            name: np.zeros((n, 1), FP32) if numeric else np.full((n, 1), "", dtype=object)
            for name, numeric in zip(self.names, self.numeric, strict=True)
        }

    def log_options(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def submit_log(log, route: str, logged: dict, results: list[np.ndarray], ids) -> None:
        log.submit_rows(route, logged, results, ids)

    def feed(self, values: list[list], n: int) -> dict[str, np.ndarray]:
        """Per column its n values (floats, NaN for missing; strings, "" for missing) ->
        the ONNX feed."""
        return {
            name: (
                np.array(v, dtype=FP32).reshape(n, 1)
                if numeric
                else np.array(v, dtype=object).reshape(n, 1)
            )
            for name, numeric, v in zip(self.names, self.numeric, values, strict=True)
        }

    # --------------------------------------------------------------- /v2 ... /infer
    def decode_infer(
        self, inputs: list, binary: bytes, max_batch: int
    ) -> tuple[dict[str, np.ndarray], int, dict[str, np.ndarray], int]:
        if not binary:
            got = self._usual_json(inputs, max_batch)
            if got is not None:
                return got
        return self._decode_checked(inputs, binary, max_batch)

    def _usual_json(self, inputs: list, max_batch: int):
        """The usual request (JSON data, one [N, 1] or [N] input per column, numbers or
        strings), accepted with the fewest checks; None for anything else, which the checked
        loop then accepts or rejects by name. /infer's time for a 1-row table is mostly this."""
        index = self.usual
        arrays: list = [None] * len(index)
        n, filled = -1, 0
        for tensor in inputs:
            if type(tensor) is not dict or "parameters" in tensor:
                return None
            name = tensor.get("name")
            entry = index.get(name) if type(name) is str else None
            if entry is None:
                return None
            j, datatype, numeric = entry
            shape, data = tensor.get("shape"), tensor.get("data")
            if (
                arrays[j] is not None
                or tensor.get("datatype") != datatype
                or type(shape) is not list
                or type(data) is not list
            ):
                return None
            rows = len(data)
            if rows != n:
                if n != -1:
                    return None
                n = rows
            if type(shape[0] if shape else None) is not int or shape not in ([rows, 1], [rows]):
                return None
            if data and type(data[0]) is list:
                flat = []
                for row in data:
                    if type(row) is not list or len(row) != 1:
                        return None
                    flat.append(row[0])
            else:
                flat = data
            if numeric:
                for v in flat:
                    if v is None:
                        continue
                    if (type(v) is not float and type(v) is not int) or not (
                        -FP32_MAX <= v <= FP32_MAX
                    ):
                        return None
                arrays[j] = np.array(flat, dtype=FP32).reshape(rows, 1)
            else:
                for v in flat:
                    if type(v) is not str:
                        if v is not None:
                            return None
                        flat = [MISSING_CATEGORY if v is None else v for v in flat]
                        break
                arrays[j] = np.array(flat, dtype=object).reshape(rows, 1)
            filled += 1
        if not 1 <= n <= max_batch or filled != len(index):
            return None
        feed = dict(zip(self.names, arrays, strict=True))
        return feed, n, feed, 0

    def _decode_checked(self, inputs: list, binary: bytes, max_batch: int):
        """Every request form, every check, each error naming its input and column."""
        arrays: list[np.ndarray | None] = [None] * len(self.names)
        n, first, offset = None, None, 0
        for i, tensor in enumerate(inputs):
            where = f"inputs[{i}]"
            if type(tensor) is not dict:
                raise RequestError(400, f"{where}: expected an object with name, shape, datatype")
            name = tensor.get("name")
            j = self.index.get(name) if isinstance(name, str) else None
            if j is None:
                raise RequestError(
                    400,
                    f"{where}.name: unknown column {name!r}; the model takes one input per "
                    f"column: {self.names}",
                )
            if arrays[j] is not None:
                raise RequestError(400, f"{where}.name: column {name!r} given twice")
            where = f"inputs[{i}] ({name})"
            numeric = self.numeric[j]
            want = "FP32" if numeric else "BYTES"
            datatype = tensor.get("datatype")
            if datatype != want:
                kind = "numeric" if numeric else "categorical"
                raise RequestError(
                    400,
                    f"{where}.datatype: column {name!r} is {kind}: expected {want}, "
                    f"got {datatype!r}",
                )
            shape = tensor.get("shape")
            if (
                type(shape) is not list
                or not INT_ONLY.issuperset(map(type, shape))
                or len(shape) not in (1, 2)
                or (len(shape) == 2 and shape[1] != 1)
            ):
                raise RequestError(400, f"{where}.shape: expected [N, 1] or [N], got {shape!r}")
            rows = shape[0]
            if not 1 <= rows <= max_batch:
                raise RequestError(
                    400,
                    f"{where}.shape[0]: batch of {rows}; this server takes 1 to {max_batch} "
                    "rows per request (MAX_BATCH)",
                )
            if n is None:
                n, first = rows, name
            elif rows != n:
                raise RequestError(
                    400,
                    f"{where}.shape: column {name!r} has {rows} rows, but column {first!r} "
                    f"has {n}; every column takes one value per row",
                )
            values, offset = self._values(tensor, where, numeric, rows, binary, offset)
            arrays[j] = values.reshape(rows, 1)
        missing = [name for name, a in zip(self.names, arrays, strict=True) if a is None]
        if missing:
            raise RequestError(
                400,
                f"inputs: missing column(s) {missing}; the model takes one input per column "
                "(send null, or NaN in binary, for a missing value)",
            )
        feed = dict(zip(self.names, arrays, strict=True))
        return feed, n, feed, offset

    def _values(
        self, tensor: dict, where: str, numeric: bool, rows: int, binary: bytes, offset: int
    ) -> tuple[np.ndarray, int]:
        params = tensor.get("parameters")
        if "parameters" in tensor and not isinstance(params, dict):
            raise RequestError(400, f"{where}.parameters: expected an object")
        size = params.get("binary_data_size") if params else None
        if size is not None:
            if "data" in tensor:
                raise RequestError(400, f"{where}: has both data and parameters.binary_data_size")
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise RequestError(
                    400,
                    f"{where}.parameters.binary_data_size: {size!r} does not fit "
                    f"the {len(binary) - offset} bytes of binary data left",
                )
            blob = binary[offset : offset + size]
            if numeric:
                if size != rows * 4:
                    raise RequestError(
                        400,
                        f"{where}.parameters.binary_data_size: {size} bytes, but "
                        f"{rows} FP32 values take {rows * 4}",
                    )
                values = np.frombuffer(blob, dtype=FP32)
            else:
                values = np.array(_bytes_elements(blob, rows, where), dtype=object)
            offset += size
        else:
            data = tensor.get("data")
            if type(data) is not list:
                if "data" not in tensor:
                    raise RequestError(
                        400, f"{where}.data: missing (or give parameters.binary_data_size)"
                    )
                raise RequestError(400, f"{where}.data: expected an array")
            try:
                flat = _flat(data)
            except TypeError:
                raise RequestError(400, f"{where}.data: expected [v, ...] or [[v], ...]") from None
            if len(flat) != rows:
                raise RequestError(
                    400, f"{where}.data: {len(flat)} values, but the shape needs {rows}"
                )
            if numeric:
                # JSON null is a missing value (NaN); booleans and strings are not numbers.
                if not _NUMBER_TYPES.issuperset(map(type, flat)):
                    bad = next(v for v in flat if type(v) not in _NUMBER_TYPES)
                    raise RequestError(
                        400, f"{where}.data: expected numbers or null (FP32), got {bad!r}"
                    )
                values = np.array(flat, dtype=FP32)
            else:
                if not all(type(v) is str or v is None for v in flat):
                    bad = next(v for v in flat if not (type(v) is str or v is None))
                    raise RequestError(
                        400, f"{where}.data: expected strings or null (BYTES), got {bad!r}"
                    )
                values = np.array(
                    [MISSING_CATEGORY if v is None else v for v in flat], dtype=object
                )
        if numeric and np.isinf(values).any():
            raise RequestError(
                400, f"{where}.data: contains infinity (or a number beyond FP32's range)"
            )
        return values, offset

    # --------------------------------------------------------------- rows (/predict, make predict)
    def from_records(self, records: list, where: str = "rows"):
        """JSON rows [{column: value}, ...] -> (per column its values, n, the rows' own ids or
        None when no row has one); a missing or unknown column, or a value of the wrong type,
        is named with its row."""
        values: list[list] = [[] for _ in self.names]
        known, extra, id_column = self.index, self.extra, self.id_column
        ids: list[str | None] = []
        for i, record in enumerate(records):
            at = f"{where}[{i}]"
            if not isinstance(record, dict):
                raise RequestError(400, f"{at}: expected an object {{column: value, ...}}")
            ids.append(row_id(record.get(id_column), f"{at}.{id_column}") if id_column else None)
            unknown = [k for k in record if k not in known and k not in extra]
            if unknown:
                raise RequestError(
                    400, f"{at}: unknown column(s) {unknown}; the model takes {self.names}"
                )
            for j, name in enumerate(self.names):
                if name not in record:
                    raise RequestError(
                        400, f"{at}: missing column {name!r} (send null for a missing value)"
                    )
                v = record[name]
                values[j].append(
                    number(v, f"{at}.{name}") if self.numeric[j] else category(v, f"{at}.{name}")
                )
        return values, len(records), ids if any(i is not None for i in ids) else None

    def from_csv(self, text: str, source: str, max_rows: int | None = None):
        """CSV text with a header row -> (names "<source>:row <k>", per column values, n, the
        rows' own ids); the target column, if there, is ignored; another unknown one is an
        error."""
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if not header:
            raise RequestError(400, f"{source}: empty; expected a header row naming the columns")
        header = [h.strip() for h in header]
        return self.from_table(header, reader, source, max_rows, text=True, strict=True)

    def from_table(
        self,
        header: list[str],
        rows,
        source: str,
        max_rows: int | None,
        text: bool,
        strict: bool = False,
    ):
        """Rows of cells under a header (CSV text, or Python values from Parquet) -> (names,
        per column values, n, the `id` column's values or None without one); `strict`: a column
        the model does not take (but the target and the id) is an error, else ignored."""
        seen = set()
        for h in header:
            if h in seen:
                raise RequestError(400, f"{source}: column {h!r} appears twice in the header")
            seen.add(h)
        missing = [name for name in self.names if name not in seen]
        if missing:
            raise RequestError(
                400, f"{source}: missing column(s) {missing}; the model takes {self.names}"
            )
        unknown = [h for h in header if h not in self.index and h not in self.extra]
        if unknown and strict:
            raise RequestError(
                400, f"{source}: unknown column(s) {unknown}; the model takes {self.names}"
            )
        where = [header.index(name) for name in self.names]
        id_at = header.index(self.id_column) if self.id_column in seen else None
        own: list[str] | None = None if id_at is None else []
        values: list[list] = [[] for _ in self.names]
        ids = []
        for k, row in enumerate(rows, start=1):
            if max_rows is not None and k > max_rows:
                raise RequestError(
                    400,
                    f"{source}: more than {max_rows} rows; this server takes at most "
                    f"{max_rows} per request (MAX_BATCH)",
                )
            if text and not row:
                continue  # a blank line
            if len(row) != len(header):
                raise RequestError(
                    400, f"{source}: row {k} has {len(row)} cells, the header {len(header)}"
                )
            for j, (name, numeric, col) in enumerate(
                zip(self.names, self.numeric, where, strict=True)
            ):
                cell, at = row[col], f"{source}: row {k}, column {name!r}"
                if text:
                    values[j].append(number_text(cell, at) if numeric else category_text(cell))
                elif numeric:
                    values[j].append(_number_value(cell, at))
                else:
                    values[j].append(category(cell, at))
            if own is not None:
                at = f"{source}: row {k}, column {self.id_column!r}"
                own.append(row_id(row[id_at].strip() if text else row[id_at], at, required=True))
            ids.append(f"{source}:row {k}" if text else str(k - 1))
        if not ids:
            raise RequestError(400, f"{source}: no rows under the header")
        return ids, values, len(ids), own

    # --------------------------------------------------------------- /predict
    async def read_predict(self, request, max_batch: int):
        """JSON rows or CSV files -> (names, feed, n, the feed for the log, the rows' own ids:
        None, or one per row, None where a row has none)."""
        from ...serve.friendly import read_form, read_json_body

        form = await read_form(
            request, max_batch, "CSV files with a header row", "curl -F files=@rows.csv"
        )
        if form is not None:
            names, columns, n = [], [[] for _ in self.names], 0
            own: list[str | None] = []
            for source, data in form:
                try:
                    text = data.decode("utf-8-sig")
                except UnicodeDecodeError:
                    raise RequestError(400, f"{source}: not UTF-8 text; send a CSV file") from None
                ids, values, rows, file_ids = self.from_csv(text, source, max_batch - n)
                names += ids
                own += file_ids if file_ids is not None else [None] * rows
                n += rows
                for col, v in zip(columns, values, strict=True):
                    col.extend(v)
        else:
            _, body = await read_json_body(
                request,
                'application/json ({"rows": [{"column": value, ...}]}) or multipart/form-data '
                "(CSV files)",
            )
            if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
                raise RequestError(400, 'rows: expected {"rows": [{"column": value, ...}, ...]}')
            records = body["rows"]
            if not records:
                raise RequestError(400, "rows: empty; send at least one row")
            if len(records) > max_batch:
                raise RequestError(
                    400,
                    f"rows: {len(records)} rows; this server takes at most {max_batch} per "
                    "request (MAX_BATCH)",
                )
            columns, n, own = self.from_records(records)
            names = [f"rows[{i}]" for i in range(n)]
        feed = self.feed(columns, n)
        return names, feed, n, feed, own if own and any(i is not None for i in own) else None

    # --------------------------------------------------------------- make predict
    def batch_items(self, path: Path, batch: int) -> Iterator[tuple[list[str], dict, int]]:
        """A CSV or Parquet file: ids are its `id` column's values when it has one (that the
        model does not take), else the row numbers (0-based, as pandas numbers them). Other
        columns beyond the model's are ignored (the target, anything else)."""
        path = Path(path)
        if path.is_dir():
            raise RequestError(400, f"{path}: a folder; a table model scores a CSV or Parquet file")
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            _, values, n, own = self._parquet(path)
        elif suffix in (".csv", ".txt"):
            try:
                text = path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError:
                raise RequestError(400, f"{path}: not UTF-8 text; expected a CSV file") from None
            reader = csv.reader(io.StringIO(text))
            header = [h.strip() for h in next(reader, None) or []]
            if not header:
                raise RequestError(400, f"{path}: empty; expected a header row")
            _, values, n, own = self.from_table(header, reader, str(path), None, text=True)
        else:
            raise RequestError(
                400, f"{path}: expected a .csv or .parquet file, got {suffix or 'no suffix'}"
            )
        ids = own if own is not None else [str(i) for i in range(n)]
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            yield (
                ids[start:stop],
                self.feed([v[start:stop] for v in values], stop - start),
                (stop - start),
            )

    def _parquet(self, path: Path):
        try:
            import pyarrow.parquet as pq
        except ImportError:  # the serving image has no pyarrow
            raise RequestError(
                400, f"{path}: reading Parquet needs pyarrow (pip install pyarrow)"
            ) from None
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise RequestError(400, f"{path}: cannot read Parquet ({exc})") from None
        header = table.column_names
        missing = [name for name in self.names if name not in header]
        if missing:
            raise RequestError(
                400, f"{path}: missing column(s) {missing}; the model takes {self.names}"
            )
        names = self.names + ([self.id_column] if self.id_column in header else [])
        rows = zip(*(table.column(name).to_pylist() for name in names), strict=True)
        return self.from_table(names, rows, str(path), None, text=False)


def row_id(value: Any, where: str, required: bool = False) -> str | None:
    """A row's own id: a string or an integer (as text); None when absent (a JSON row without
    one), unless `required` (a file's id column holds one per row)."""
    if value is None or value == "":
        if required:
            raise RequestError(400, f"{where}: empty; a row of a table with an id column needs one")
        return None
    if isinstance(value, str):
        if len(value) > MAX_ID_LENGTH:
            raise RequestError(
                400, f"{where}: {len(value)} characters; an id has at most {MAX_ID_LENGTH}"
            )
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RequestError(400, f"{where}: expected a string or an integer, got {value!r}")


def _number_value(value: Any, where: str) -> float:
    """A numeric cell from Parquet: a number, or None/NaN (missing)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"{where}: expected a number, got {value!r}")
    if abs(value) > FP32_MAX:
        raise RequestError(400, f"{where}: {value!r} is beyond FP32's range (or infinite)")
    return float(value)


def smoke_requests(card: dict[str, Any]) -> tuple[dict[str, Any], bytes, str]:
    """What `make smoke` (mlproject.ops.smoke) sends a running server: an Open Inference
    Protocol request of one row (one input per column: each number its training median, each
    category its first training value), and the same row as a /predict JSON body."""
    row: dict[str, Any] = {}
    inputs = []
    for column in card["input"]["columns"]:
        if column["type"] == "numeric":
            value: Any = float(column.get("fill") or 0.0)
            datatype = "FP32"
        else:
            value = (column.get("categories") or [""])[0]
            datatype = "BYTES"
        row[column["name"]] = value
        inputs.append(
            {"name": column["name"], "shape": [1, 1], "datatype": datatype, "data": [value]}
        )
    body = json.dumps({"rows": [row]}).encode()
    return {"inputs": inputs}, body, "application/json"
