"""`malenia segment --roi` with a box whose first coordinate is negative, as RAS boxes often are.

argparse takes a separate value that starts with '-' for an option; `--roi -30,5,90,10,35,110` was refused as a bad
command line ("expected one argument", exit 2) although docs/segment.md documents the option as
`--roi x0,y0,z0,x1,y1,z1` in RAS mm.
"""

from __future__ import annotations

import pytest

from malenia.cli import build_parser, join_negative_lists, main
from malenia.errors import EXIT_BAD_INPUT

BOX = "-30,5,90,10,35,110"


@pytest.mark.parametrize("box", [BOX, "-30.5,5,90,10,35,110", "-.5,-5,-90,10,35,110", "-1e1,5,90,10,35,110"])
def test_a_box_starting_with_a_negative_coordinate_is_the_roi_value(box):
    args = build_parser().parse_args(join_negative_lists(["segment", "ct.nii.gz", "--out", "o", "--roi", box]))
    assert args.roi == box and args.input == "ct.nii.gz"


def test_other_tokens_are_left_as_they_are():
    argv = ["segment", "ct.nii.gz", "--roi", "0,0,0,1,1,1", "--out", "o", "--threshold", "-1", "--overwrite"]
    assert join_negative_lists(argv) == argv
    # an option after --roi stays an option (argparse then says --roi lacks its value), and -- ends the options
    assert join_negative_lists(["--roi", "--overwrite"]) == ["--roi", "--overwrite"]
    assert join_negative_lists(["--", "--roi", BOX]) == ["--", "--roi", BOX]
    assert join_negative_lists(["--out", BOX]) == ["--out", BOX]  # only the number-list options


def test_the_command_reads_the_box_and_goes_on_to_the_input(tmp_path, capsys):
    # the input does not exist: an input error (3) from the command itself, not a command-line error (2)
    code = main(["segment", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "out"), "--roi", BOX])
    assert code == EXIT_BAD_INPUT, capsys.readouterr().err
    assert "expected one argument" not in capsys.readouterr().err
