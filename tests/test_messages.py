"""Pickle-free messages between Parallax's processes (``scene.messages``)."""
from __future__ import annotations

import numpy as np
import pytest

from scene.camera import Camera
from scene.messages import (MessageError, camera_fields, camera_from_fields, decode, encode, frame_ref_fields,
                            frame_ref_from_fields, start_child, trajectory_fields, trajectory_from_fields)
from scene.model import FrameRef, Trajectory


def test_nested_fields_and_arrays_round_trip_exactly():
    rng = np.random.default_rng(0)
    fields = {
        "image": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "xy": rng.normal(size=(10, 2)),
        "nan": np.array([np.nan, 1.0]),
        "empty": np.zeros((0, 3), np.float32),
        "per_keyframe": [rng.normal(size=(k, 2)) for k in (0, 3, 5)],
        "nested": {"ids": np.arange(5, dtype=np.int64), "flag": True, "none": None, "name": "kf_00001"},
        "scalar": np.float32(2.5), "size": (640, 480), "fortran": np.asfortranarray(rng.normal(size=(3, 4))),
    }
    kind, out = decode(encode("snapshot", fields))
    assert kind == "snapshot"
    for name in ("image", "xy", "empty", "fortran"):
        assert out[name].dtype == fields[name].dtype and np.array_equal(out[name], fields[name]), name
    assert np.array_equal(out["nan"], fields["nan"], equal_nan=True)
    assert all(np.array_equal(a, b) for a, b in zip(out["per_keyframe"], fields["per_keyframe"]))
    assert np.array_equal(out["nested"]["ids"], fields["nested"]["ids"])
    assert out["nested"]["flag"] is True and out["nested"]["none"] is None and out["nested"]["name"] == "kf_00001"
    assert out["scalar"] == 2.5 and out["size"] == [640, 480]
    out["xy"][0, 0] = 7.0  # decoded arrays are writable copies


def test_object_arrays_are_refused_both_ways():
    with pytest.raises(TypeError, match="pickle"):
        encode("x", {"a": np.array([{"a": 1}], dtype=object)})
    data = bytearray(encode("x", {"a": np.zeros(2, np.int64)}))
    forged = bytes(data).replace(b'"<i8"', b'"|O" ', 1)  # same length: an object dtype in the header
    with pytest.raises(MessageError, match="dtype"):
        decode(forged)


def test_truncated_or_garbled_messages_raise_a_clear_error():
    data = encode("x", {"a": np.arange(100.0)})
    with pytest.raises(MessageError, match="truncated"):
        decode(data[:-8])
    with pytest.raises(MessageError):
        decode(b"\x05\x00\x00\x00{nope")


def test_scene_types_round_trip():
    camera = Camera(3, "OPENCV", 640, 480, np.array([500.0, 501.0, 320.0, 240.0, 0.1, -0.01, 0.001, 0.002]),
                    intrinsics_source="calib")
    _, f = decode(encode("x", {"camera": camera_fields(camera)}))
    assert camera_from_fields(f["camera"]) == camera
    for ref in (None, FrameRef("/data/a.mp4", 7, 0.25), FrameRef("/data/b.png")):
        _, f = decode(encode("x", {"ref": frame_ref_fields(ref)}))
        assert frame_ref_from_fields(f["ref"]) == ref
    traj = Trajectory(np.array([0.0, 0.5]), np.array([[1.0, 0, 0, 0], [0.0, 1, 0, 0]]),
                      np.array([[0, 1, 2], [3, 4, 5.0]]))
    _, f = decode(encode("x", {"t": trajectory_fields(traj)}))
    back = trajectory_from_fields(f["t"])
    assert np.array_equal(back.timestamps, traj.timestamps)
    assert np.array_equal(back.world_from_cam_quat_wxyz, traj.world_from_cam_quat_wxyz)
    assert np.array_equal(back.world_from_cam_translation, traj.world_from_cam_translation)
    assert trajectory_from_fields(trajectory_fields(None)) is None


def test_a_child_gets_a_channel_and_its_death_reads_as_eof():
    process, channel = start_child("slam.extractor_process")  # any child that speaks the protocol
    try:
        channel.send("start", options={"n_features": 100, "reference_size": [640, 480]})
        assert channel.poll(120.0) and channel.recv()[0] == "ready"
        process.kill()
        process.wait(10.0)
        with pytest.raises(EOFError):
            channel.recv()
    finally:
        channel.close()


def test_a_closed_channel_refuses_to_send_or_read():
    import os

    from scene.messages import Channel

    r, w = os.pipe()
    channel = Channel(r, w)
    channel.send("x", a=np.arange(3))
    assert channel.poll(1.0) and channel.recv()[0] == "x"
    channel.close()
    channel.close()  # twice is fine
    with pytest.raises(OSError):
        channel.send("x")
    with pytest.raises(OSError):
        channel.recv()
