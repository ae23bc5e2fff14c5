"""Where MaleniaSegment saves corrections and MaleniaTrainer finds them (one owner of the layout):

    CORRECTIONS/cases/<case>/vNNN/{image.nii.gz, lesions.nii.gz, report.json}
"""

from __future__ import annotations

import re

CASE_FILES = ("image.nii.gz", "lesions.nii.gz", "report.json")
VERSION_RE = re.compile(r"^v(\d{3,})$")  # a version folder: v001, v002, ...
