"""Library errors name the library's arguments; the command words the same errors with its flags."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from fatvit.cli.errors import WORDINGS, error_line
from fatvit.errors import FatvitError
from fatvit.files import OutputExistsError, check_output_file
from fatvit.quantize import CalibrationSizeError, split_calibration
from fatvit.tasks.classification.inference import (
    Classifier,
    NoClassNamesError,
    OptionNotForFileError,
    load_classifier,
)


def test_every_wording_names_an_error_class_of_the_library():
    for module, name, _ in WORDINGS:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, FatvitError), name
    assert len({name for _, name, _ in WORDINGS}) == len(WORDINGS)


def _raised(call, *args, **kwargs) -> FatvitError:
    with pytest.raises(FatvitError) as err:
        call(*args, **kwargs)
    return err.value


def test_library_errors_name_arguments_and_the_command_names_flags(tmp_path):
    existing = tmp_path / "out.csv"
    existing.write_text("mine")
    classifier = Classifier(model=None, transform=None, config=None, num_classes=3, classes=None, source="a.pth")
    cases = [
        (_raised(check_output_file, existing, "--csv", False), OutputExistsError, "overwrite=True",
         f"--csv {existing} exists; give --overwrite to replace it"),
        (_raised(split_calibration, 10, 0), CalibrationSizeError, "calibration_images must be at least 1, got 0",
         "--calibration-images must be at least 1, got 0"),
        (_raised(split_calibration, 10, 10), CalibrationSizeError, "calibration_images=10 leaves none held out",
         "the calibration set has 10 images: --calibration-images 10 leaves none held out"),
        (_raised(classifier.class_names), NoClassNamesError, "load_classifier(..., classes=names), 3 names",
         "give them with --classes FILE, one name per line in output order (3 lines)"),
        (_raised(load_classifier, tmp_path / "m.onnx", use_ema=True), OptionNotForFileError,
         "(use_ema applies to training checkpoints)", "(--ema applies to training checkpoints)"),
        (_raised(load_classifier, tmp_path / "m.pth", runtime="openvino"), OptionNotForFileError,
         "runtime='openvino' runs exported .onnx files", "--runtime openvino runs exported .onnx files"),
    ]  # fmt: skip
    for err, cls, library, command in cases:
        assert type(err) is cls
        assert library in str(err) and "--" not in str(err).replace("--csv", ""), str(err)
        assert command in error_line(err), error_line(err)
    assert error_line(FatvitError("a plain one")) == "a plain one"
    assert existing.read_text() == "mine"


def test_wording_an_error_imports_nothing():
    """The wordings look only at modules already loaded: a plain error's line comes without torch."""
    code = ("import sys; from fatvit.cli.errors import error_line; from fatvit.errors import FatvitError; "
            "print(error_line(FatvitError('x')), 'torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["x", "False"]
