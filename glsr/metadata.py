"""Artifact metadata schema: what a runtime needs to use an exported model, stored inside every artifact.

Stored as flat string key/value pairs (ONNX ``metadata_props``, CoreML user-defined metadata, MNN sidecar
JSON), all prefixed ``glsr.``; :meth:`ArtifactMetadata.to_props` / :meth:`from_props` convert. Imports nothing
from glsr.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Mapping

SCHEMA_VERSION = 1
PREFIX = "glsr."


@dataclass(frozen=True)
class ArtifactMetadata:
    """Pre/post-processing contract of a model plus provenance.

    Pre-processing: crop the detector box enlarged by ``crop_enlarge`` about its centre onto an
    ``input_size`` square (corner pixel-centre convention of :mod:`glsr.geometry`), channels in
    ``channel_order``, values ``(pixel - pixel_mean) / pixel_std``, layout NCHW float32.
    Output ``[B, num_points, 2]``: landmarks (x, y) in crop pixels. A *host-warp* artifact (``host_warp`` not
    empty) holds separate graphs instead, run by :mod:`glsr.runtime.hostwarp`; the crop frame above is then only the
    frame its fixed loc region is defined in.
    """

    variant: str
    scheme: str
    num_points: int
    input_size: int
    crop_enlarge: float
    box_scale: float
    channel_order: str = "BGR"
    pixel_mean: float = 127.5
    pixel_std: float = 127.5
    input_name: str = "crop"
    output_name: str = "landmarks"
    format: str = "pt"
    precision: str = "fp32"
    sampler: str = "gridsample"
    batch: str = "1"               # a number, or "dynamic"
    box_convention: str = ""       # the face boxes the model was trained on ("tight", "procedural", "wflw"; "" unknown)
    glsr_version: str = ""
    git_commit: str = ""
    export_options: Dict[str, Any] = field(default_factory=dict)
    host_warp: Dict[str, Any] = field(default_factory=dict)  # {} = one graph; else glsr.models.hostwarp.host_warp_spec
    stages: str = ""               # the stages the artifact runs, " > "-joined (GLSRNet.stages); "" = not recorded
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_props(self) -> Dict[str, str]:
        """Flat ``{"glsr.key": "value"}`` strings; dicts are JSON."""
        return {PREFIX + k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v))
                for k, v in self.to_dict().items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArtifactMetadata":
        kinds = {f.name: f.type for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name in ("variant", "scheme", "num_points", "input_size",
                                                              "crop_enlarge", "box_scale") and f.name not in d]
        if missing:
            raise ValueError(f"artifact metadata lacks {missing}; was the model exported by glsr?")
        if int(d.get("schema_version", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise ValueError(f"artifact metadata schema {d['schema_version']} is newer than this glsr "
                             f"({SCHEMA_VERSION}); upgrade glsr")
        out: Dict[str, Any] = {}
        for k, v in d.items():
            if k not in kinds:
                continue  # written by a newer glsr: ignore extra keys
            t = kinds[k]
            if t in ("int",):
                v = int(v)
            elif t in ("float",):
                v = float(v)
            elif t.startswith("Dict") and isinstance(v, str):
                v = json.loads(v) if v else {}
            out[k] = v
        return cls(**out)

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> "ArtifactMetadata":
        d = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not d:
            raise ValueError("no glsr metadata found (keys 'glsr.*'); was the model exported by `glsr export`?")
        return cls.from_dict(d)


def git_commit(path: str | Path | None = None) -> str:
    """Commit of the glsr source checkout (``""`` when not in a git checkout), ``+dirty`` if modified."""
    here = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""
