"""The retraining server (`malenia serve`) and its client.

Corrections saved by the MaleniaSegment module are uploaded here, fine-tuning jobs run one at a
time in a worker subprocess (`malenia train`, through torchrun when GPUs are present), and every
resulting model becomes a numbered version that can be downloaded, promoted or rolled back.

The HTTP API is versioned separately from the package: a client refuses a server whose major
API version differs, and the server refuses a client that sends an incompatible `X-Malenia-Api`.
"""

from __future__ import annotations

from malenia.data.dataset import IMAGE_FILE, LESIONS_FILE, REPORT_FILE

API_VERSION = "1.0"
API_HEADER = "X-Malenia-Api"
# A case upload: multipart part name -> the dataset file it becomes (client and server both use this).
CASE_PARTS = {"image": IMAGE_FILE, "lesions": LESIONS_FILE, "report": REPORT_FILE}


def api_major(version: str) -> int:
    """Major part of an API version string; ValueError if it is not `MAJOR[.MINOR]`."""
    head = str(version).strip().split(".")[0]
    if not head.isdigit():
        raise ValueError(f"not an API version: {version!r}")
    return int(head)


def api_compatible(other: str, ours: str = API_VERSION) -> bool:
    try:
        return api_major(other) == api_major(ours)
    except ValueError:
        return False
