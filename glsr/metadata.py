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
DIGEST_KEY = PREFIX + "metadata_sha256"
"""The prop holding the SHA-256 of every other ``glsr.*`` prop (:func:`metadata_digest`): metadata edited after
the export (a halved input size, another crop enlargement or box convention) no longer matches it."""
TRUST_ENV = "GLSR_TRUST_METADATA"
"""Set (``glsr --trust-metadata``): metadata failing its digest or its graph is used anyway, with a warning."""


class MetadataError(ValueError):
    """An artifact's metadata fails its digest or disagrees with the graph it describes: refused unless the user
    trusts it (:data:`TRUST_ENV`)."""


def metadata_digest(props: Mapping[str, str]) -> str:
    """Hex SHA-256 of the ``glsr.*`` props other than :data:`DIGEST_KEY`, as sorted compact JSON."""
    import hashlib

    body = {k: str(v) for k, v in props.items() if k.startswith(PREFIX) and k != DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def metadata_trusted() -> bool:
    import os

    return bool(os.environ.get(TRUST_ENV))


def refuse_or_warn(problem: str, source: object = "") -> None:
    """Raise :class:`MetadataError` with ``problem`` and the fix, or, when the user trusts metadata
    (``--trust-metadata``), print it as a warning on stderr and go on."""
    import sys

    where = f"{source}: " if source else ""
    if metadata_trusted():
        print(f"glsr: WARNING: {where}{problem}; used anyway because of --trust-metadata: its landmarks may be wrong",
              file=sys.stderr)
        return
    raise MetadataError(f"{where}{problem}; export it again with `glsr export`, or pass --trust-metadata to use it "
                        "anyway")


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
    box_convention: str = ""       # the face boxes the model was trained on (glsr.boxes.CONVENTIONS; "" unknown)
    glsr_version: str = ""
    git_commit: str = ""
    export_options: Dict[str, Any] = field(default_factory=dict)
    host_warp: Dict[str, Any] = field(default_factory=dict)  # {} = one graph; else glsr.models.hostwarp.host_warp_spec
    weights_sha256: str = ""       # digest of the exported weights (glsr.models.checkpoint.weights_sha256); "" unknown
    stages: str = ""               # the stages the artifact runs, " > "-joined (GLSRNet.stages); "" = not recorded
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_props(self) -> Dict[str, str]:
        """Flat ``{"glsr.key": "value"}`` strings; dicts are JSON; plus their digest (:data:`DIGEST_KEY`)."""
        props = {PREFIX + k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v))
                 for k, v in self.to_dict().items()}
        return {**props, DIGEST_KEY: metadata_digest(props)}

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
    def from_props(cls, props: Mapping[str, str], source: object = "", verify: bool = True) -> "ArtifactMetadata":
        """The metadata of an artifact's props; ``verify``: check them against their digest (a missing or wrong
        digest is refused, naming ``source``, unless the user trusts metadata: :func:`refuse_or_warn`)."""
        d = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX) and k != DIGEST_KEY}
        if not d:
            raise ValueError(f"{source}: " * bool(source) + "no glsr metadata found (keys 'glsr.*'); was the model "
                             "exported by `glsr export`?")
        if verify:
            stored = props.get(DIGEST_KEY)
            if not stored:
                refuse_or_warn("its glsr metadata carries no digest (written by an older glsr, or the digest was "
                               "removed): nothing shows it is the metadata the export wrote", source)
            elif stored != metadata_digest(props):
                refuse_or_warn("its glsr metadata was changed after the export (the digest of its props does not "
                               "match): the crop, scheme or convention it states may not be the ones the graph "
                               "was built for", source)
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
