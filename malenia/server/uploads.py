"""Streams a multipart upload (image, lesions, report[, name]) into a staging folder.

python-multipart's push parser gets the request body chunk by chunk; each part goes straight to
disk under DATA/staging with its sha256 computed on the way, and a part or the whole body that
grows past its limit stops the upload at once (413). Client file names are ignored.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from malenia.errors import InputError
from malenia.server import CASE_PARTS
from malenia.server.config import UploadLimits

TEXT_PARTS = {"name": 200}


class TooLarge(InputError):
    """The body or one part is over its limit (HTTP 413)."""


@dataclass
class StagedUpload:
    folder: Path
    part_sha256: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    nbytes: int = 0

    def content_sha256(self, report_sha256: str) -> str:
        """Identity of a case: the image and mask bytes and the report's canonical JSON."""
        text = f"malenia-case/1\nimage {self.part_sha256['image']}\nlesions {self.part_sha256['lesions']}\nreport {report_sha256}\n"
        return hashlib.sha256(text.encode()).hexdigest()

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class MultipartToFolder:
    def __init__(self, content_type: str, folder: Path, limits: UploadLimits):
        mime, params = parse_options_header(content_type)
        if mime != b"multipart/form-data" or b"boundary" not in params:
            raise InputError("upload must be multipart/form-data with parts image, lesions, report")
        self.limits = limits
        self.staged = StagedUpload(folder)
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._file: BinaryIO | None = None
        self._hash = None
        self._size = 0
        self._text = bytearray()
        self._seen: set[str] = set()
        self._error: Exception | None = None
        self._ended = False  # the closing boundary was read: python-multipart's finalize() does not check it
        try:
            self.parser = MultipartParser(params[b"boundary"], {
                "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
                "on_header_field": self._header_field, "on_header_value": self._header_value,
                "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
                "on_end": self._end,
            })
        except FormParserError as err:  # e.g. a boundary longer than the standard's 70 characters
            raise InputError(f"malformed multipart body ({str(err)[:120]})") from None

    # -- python-multipart callbacks
    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or not name:
            raise InputError("multipart part without a form-data name")
        if name not in CASE_PARTS and name not in TEXT_PARTS:
            raise InputError(f"unexpected form field {name[:40]!r}; expected image, lesions, report (and optional name)")
        if name in self._seen:
            raise InputError(f"form field {name!r} sent twice")
        self._seen.add(name)
        self._name, self._size = name, 0
        if name in CASE_PARTS:
            self._file = open(self.staged.folder / f"{name}.part", "wb")
            self._hash = hashlib.sha256()
        else:
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self._size += len(chunk)
        limit = self._limit(self._name)
        if self._size > limit:
            raise TooLarge(f"{self._name}: larger than the limit of {limit} bytes")
        if self._file is not None:
            self._file.write(chunk)
            self._hash.update(chunk)
        else:
            self._text += chunk

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.staged.part_sha256[self._name] = self._hash.hexdigest()
        else:
            self.staged.fields[self._name] = self._text.decode("utf-8", "replace")

    def _end(self) -> None:
        self._ended = True

    def _limit(self, name: str | None) -> int:
        return {"image": self.limits.max_image_bytes, "lesions": self.limits.max_lesions_bytes,
                "report": self.limits.max_report_bytes}.get(name or "", TEXT_PARTS.get(name or "", 0))

    # -- driving
    def feed(self, chunk: bytes) -> None:
        self.staged.nbytes += len(chunk)
        if self.staged.nbytes > self.limits.max_request_bytes:
            raise TooLarge(f"upload larger than the limit of {self.limits.max_request_bytes} bytes")
        try:
            self.parser.write(chunk)
        except FormParserError as err:  # random bytes, a broken boundary: the client's fault, not a 500
            raise InputError(f"malformed multipart body ({str(err)[:120]})") from None

    def finish(self) -> StagedUpload:
        try:
            self.parser.finalize()
        except FormParserError as err:
            raise InputError(f"malformed multipart body ({str(err)[:120]})") from None
        if self._file is not None:
            self._file.close()
            raise InputError("upload ended in the middle of a part")
        if not self._ended:  # cut off inside or after a text part (a file part is caught above): refused whole
            raise InputError("upload ended before the closing multipart boundary (body cut short)")
        missing = [p for p in CASE_PARTS if p not in self.staged.part_sha256]
        if missing:
            raise InputError(f"upload is missing part(s) {missing}; expected image, lesions, report")
        for part, target in CASE_PARTS.items():
            src = self.staged.folder / f"{part}.part"
            if target.endswith(".gz") and not _is_gzip(src):
                _gzip_file(src, self.staged.folder / target)  # dataset files are .nii.gz
                src.unlink()
            else:
                os.replace(src, self.staged.folder / target)
        return self.staged

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _gzip_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, gzip.open(dst, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
