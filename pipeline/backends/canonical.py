"""MediaPipe's canonical face and the pose-removed landmarks measured against it.

`canonical_landmarks`: the similarity transform (rotation, uniform scale, translation) is
removed by weighted Procrustes (Umeyama) of a frame's 478 landmarks onto MediaPipe's own
canonical face mesh, using the 33 rigid "procrustes basis" points and weights MediaPipe's
geometry pipeline uses (both read from `geometry_pipeline_metadata_landmarks.binarypb`
inside the `.task` bundle, `canonical_face`). The result is in the canonical model's frame
and units (cm), so it is the same for any rotated/scaled/shifted copy of the input and
comparable across clips; perspective is not modelled (weak perspective).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

from fd2talk.pipeline.backends import weights
from fd2talk.pipeline.backends.landmarker import GEOMETRY_MEMBER, check_task


@functools.cache
def _geometry_message() -> type:
    """The protobuf message class of MediaPipe's GeometryPipelineMetadata as this bundle's file
    lays it out (mediapipe/modules/face_geometry/protos; MediaPipe's wheel ships no Python
    classes for it): {1: canonical mesh {3: vertex_buffer (x y z u v)...}, 2: procrustes
    basis {1: landmark_id, 2: weight}}; other fields are kept as unknown ones."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="fd2talk/geometry_pipeline_metadata.proto", package="fd2talk.geometry", syntax="proto2"
    )
    mesh = proto.message_type.add(name="Mesh3d")
    mesh.field.add(name="vertex_buffer", number=3, type=f.TYPE_FLOAT, label=f.LABEL_REPEATED)
    ref = proto.message_type.add(name="WeightedLandmarkRef")
    ref.field.add(name="landmark_id", number=1, type=f.TYPE_UINT32, label=f.LABEL_OPTIONAL)
    ref.field.add(name="weight", number=2, type=f.TYPE_FLOAT, label=f.LABEL_OPTIONAL)
    meta = proto.message_type.add(name="GeometryPipelineMetadata")
    meta.field.add(
        name="canonical_mesh",
        number=1,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_OPTIONAL,
        type_name=".fd2talk.geometry.Mesh3d",
    )
    meta.field.add(
        name="procrustes_landmark_basis",
        number=2,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_REPEATED,
        type_name=".fd2talk.geometry.WeightedLandmarkRef",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("fd2talk.geometry.GeometryPipelineMetadata")
    )


@dataclass(frozen=True)
class CanonicalFace:
    """MediaPipe's canonical face model and its Procrustes basis (geometry pipeline metadata)."""

    mesh: np.ndarray  # (468, 3) float64 canonical vertices, cm, y up, z towards the camera
    basis_ids: np.ndarray  # (33,) int landmark indices of the rigid Procrustes basis
    basis_weights: np.ndarray  # (33,) float64 their weights


def parse_geometry_metadata(data: bytes) -> CanonicalFace:
    """GeometryPipelineMetadata {canonical_mesh = 1 {vertex_buffer = 3 (x y z u v)...},
    procrustes_landmark_basis = 2 {landmark_id = 1, weight = 2}}, decoded by protobuf; bytes
    that are no such message raise ValueError."""
    from google.protobuf.message import DecodeError

    try:
        meta = _geometry_message().FromString(data)
    except DecodeError as e:
        raise ValueError(f"not a GeometryPipelineMetadata message: {e}") from None
    vertices = list(meta.canonical_mesh.vertex_buffer)
    ids = [b.landmark_id for b in meta.procrustes_landmark_basis]
    wts = [b.weight for b in meta.procrustes_landmark_basis]
    if len(vertices) != 468 * 5 or not ids:
        raise ValueError(
            f"expected 468 canonical vertices (x y z u v) and a Procrustes basis, "
            f"got {len(vertices)} values and {len(ids)} basis points"
        )
    mesh = np.asarray(vertices, np.float64).reshape(-1, 5)[:, :3]
    ids_arr = np.asarray(ids, np.int64)
    if ids_arr.max() >= len(mesh):
        raise ValueError("Procrustes basis landmark ids outside the canonical mesh")
    return CanonicalFace(mesh, ids_arr, np.asarray(wts, np.float64))


@functools.cache
def canonical_face(model: str | None = None) -> CanonicalFace:
    """The canonical face of the `.task` bundle at `model` (flag/env/default resolution).

    A bundle that is not a zip, lacks a member or holds unreadable geometry is a PrepError.
    """
    task = check_task(model)
    try:
        return parse_geometry_metadata(weights.task_member(task, GEOMETRY_MEMBER))
    except (ValueError, IndexError, struct.error) as e:
        raise weights.model_load_error(task, f"canonical face ({GEOMETRY_MEMBER})", e) from None


def similarity_to(
    src: np.ndarray, dst: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Umeyama: s, R, t minimising sum w |s R src + t - dst|^2 (proper rotation).

    src: (..., K, 3), dst: (K, 3), w: (K,) -> s (...,), R (..., 3, 3), t (..., 3).
    """
    w = w / w.sum()
    mu_s = np.einsum("k,...kd->...d", w, src)  # (..., 3)
    mu_d = w @ dst  # (3,)
    sc, dc = src - mu_s[..., None, :], dst - mu_d
    cov = np.einsum("k,kd,...ke->...de", w, dc, sc)  # (..., 3, 3) dst x src
    u, sig, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    d = np.ones(sig.shape)
    d[..., 2] = np.where(sign == 0, 1.0, sign)
    r = u @ (d[..., :, None] * vt)
    var = np.einsum("k,...kd->...", w, sc**2)
    s = (sig * d).sum(-1) / np.where(var > 0, var, 1.0)
    t = mu_d - s[..., None] * np.einsum("...de,...e->...d", r, mu_s)
    return s, r, t


def canonical_landmarks(landmarks: np.ndarray, face: CanonicalFace | None = None) -> np.ndarray:
    """(..., 478, 3) image-space landmarks -> (..., 478, 3) float32 pose-removed, in cm.

    Image axes (x right, y down, z away) are turned to the model's (x right, y up,
    z towards the camera), then the weighted similarity onto the canonical mesh
    (basis points only) is applied to all points. All-zero inputs (no face) stay zero.
    """
    face = face or canonical_face()
    x = np.asarray(landmarks, np.float64) * np.array([1.0, -1.0, -1.0])
    s, r, t = similarity_to(
        x[..., face.basis_ids, :], face.mesh[face.basis_ids], face.basis_weights
    )
    out = s[..., None, None] * np.einsum("...de,...ne->...nd", r, x) + t[..., None, :]
    out[~np.any(np.asarray(landmarks) != 0, axis=(-1, -2))] = 0.0
    return out.astype(np.float32)
