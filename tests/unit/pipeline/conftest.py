"""Fixtures of the pipeline unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipelinekit import PipelineProject


@pytest.fixture
def project(tmp_path: Path) -> PipelineProject:
    return PipelineProject(tmp_path / "proj")
