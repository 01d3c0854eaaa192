"""The monocular SLAM system: ``System(camera, options)``, ``step(image, timestamp) -> StepResult``,
``run(source, progress)``, ``reset()``, ``to_scene(scene)``.

One ``step`` = ORB extraction, then initialisation (state INIT) or tracking (motion model -> last keyframe
-> relocalisation), then, for a new keyframe, local mapping. By default all of it runs synchronously in the
caller's thread, so Step mode is deterministic (same frames in, bit-identical results out).

``set_background_mapping(True)`` (Play mode) moves local mapping and loop closing onto their own thread, as
ORB-SLAM runs them: ``step`` returns once the frame is tracked, a keyframe is inserted only while mapping is
idle (monocular ORB-SLAM's rule) unless the map is slipping out of view (then the frame waits for mapping
and becomes the keyframe, and the next frame waits for its new points), and tracking takes the map lock
(``slam.map_lock``) ahead of mapping.
Anything that reads the map from another thread holds ``map_lock``; ``wait_for_mapping()`` settles the map
(``to_scene`` and switching back to synchronous mapping do it).

Loop closing (``slam.loop_closing``) runs inline right after local mapping for every new keyframe: the
keyframe is added to the bag-of-words database (``slam.place_recognition``), and when a loop is found and
corrected, the current frame's pose, its matches and the motion model are re-derived from the corrected
map (``StepResult.loop_closed`` is set and ``loop_closures`` counts them), so tracking continues on it.
After a correction a global bundle adjustment refines every keyframe and point (ORB-SLAM2 runs one too;
``MappingOptions.global_ba_iterations``).

Every frame's pose is kept relative to its reference keyframe (as ORB-SLAM does), so the trajectory follows
the keyframes when local bundle adjustment moves them. ``finish()`` (which ``result`` and ``to_scene`` call)
adjusts every keyframe and point once more, to convergence (``SlamOptions.final_ba_iterations``), solves the
centres of the frames posed by rotation alone (``slam.rotation_refinement``), then solves each map-posed frame's
pose again against the settled map (``slam.frame_refinement``).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np

from geometry.lie import quat_wxyz_to_rotation
from scene.camera import Camera
from scene.errors import ParallaxError
from scene.progress import CallbackProgress, NullProgress
from scene.rigid import Rigid3d
from slam.background_mapping import BackgroundMapper
from slam.features import OrbExtractor, OrbOptions, PyramidPlan
from slam.frame_refinement import compact_matches, refine_frame_poses, refinement_state
from slam.initialization import Initializer, InitOptions
from slam.loop_closing import LoopCloser, LoopEvent, LoopOptions
from slam.map import SlamMap
from slam.map_lock import NO_LOCK, MapLock
from slam.mapping import (MappingOptions, global_bundle_adjustment, insert_keyframe, keyframe_needed,
                          keyframe_urgent, process_keyframe)
from slam.place_recognition import BowOptions, PlaceRecognizer
from slam.rotation_refinement import KeptFrames, RotationRefinementOptions, refine_rotation_only_poses
from slam.rotation_tracking import RotationOptions, pose_after_rotation, track_rotation
from slam.tracking import (Frame, TrackingOptions, relocalize, track_keyframe, track_local_map,
                           track_motion_model, track_points)

log = logging.getLogger(__name__)


class TrackingState(str, Enum):
    INIT = "INIT"
    OK = "OK"
    LOST = "LOST"
    RELOCALIZED = "RELOCALIZED"


# Keypoint status in StepResult.keypoint_status
KP_NEW = 0       # no map point
KP_TRACKED = 1   # matched to a map point and an inlier of the pose
KP_OUTLIER = 2   # matched, rejected by the pose optimisation


SLAM_MAX_FEATURES = 4000


@dataclass(frozen=True)
class SlamOptions:
    # Features scale with the frame's area up to this many (1280x960 reaches it): a 1080 x 1920 phone frame
    # at the full density (6750) made mapping too slow for Play, and 2 of 5 runs ended with a wrong trajectory.
    orb: OrbOptions = field(default_factory=lambda: OrbOptions(max_features=SLAM_MAX_FEATURES))
    init: InitOptions = field(default_factory=InitOptions)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    mapping: MappingOptions = field(default_factory=MappingOptions)
    loop: LoopOptions = field(default_factory=LoopOptions)
    bow: BowOptions = field(default_factory=BowOptions)
    rotation: RotationOptions = field(default_factory=RotationOptions)
    # System.finish solves the centres of the frames posed by rotation alone (slam.rotation_refinement).
    rotation_refinement: RotationRefinementOptions = field(default_factory=RotationRefinementOptions)
    init_median_depth: float = 1.0       # map scale: median depth of the first keyframe's points
    init_ba_iterations: int = 20
    # System.finish first runs a global BA over every keyframe and point, to convergence or this many
    # iterations (0: none): in Play, tracking cuts mapping's BAs short, the one after a loop closure included.
    final_ba_iterations: int = 100
    # System.finish solves each map-posed frame's pose again against the finished map (slam.frame_refinement).
    refine_frames: bool = True
    # Play mode extracts ORB in a process of its own (``slam.extractor_process``): same features, no GIL
    # shared with the mapping thread. Off: in this process, as Step mode always does.
    play_extraction_process: bool = True


@dataclass
class StepResult:
    frame_index: int
    timestamp: float
    state: TrackingState
    cam_from_world: Rigid3d | None
    keypoints_xy: np.ndarray         # (N, 2) COLMAP pixels
    keypoint_status: np.ndarray      # (N,) int8: KP_NEW / KP_TRACKED / KP_OUTLIER
    point_ids: np.ndarray            # (N,) map point index per keypoint, -1 if none
    num_tracked: int
    keyframe_inserted: bool
    reason: str                      # why the frame is INIT or LOST ("" otherwise)
    timings_ms: dict                 # per stage: features, initialize / track, mapping (incl. loop), loop, total
    mapping: dict = field(default_factory=dict)
    loop_closed: bool = False        # a loop was closed at this frame: every keyframe and point may have moved
    loop_closures: int = 0           # loops closed so far
    rotation_only: bool = False      # posed by rotation alone (slam.rotation_tracking): position held


@dataclass
class RunSummary:
    frames: int
    tracked: int
    initialized_at_frame: int | None
    keyframes: int
    map_points: int
    tracking_ms: list
    total_s: float
    stopped: bool
    rotation_only: int = 0           # of the tracked frames, those posed by rotation alone


def _same_array(a, b) -> bool:
    """True when a and b are the same pixels in memory: the same array, or equal views of one buffer
    (``frames[i]`` of a stacked array is a new view object each time)."""
    if a is b:
        return True
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        return False
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.shape == b.shape
            and a.strides == b.strides and a.dtype == b.dtype)


def _add_mapping_wait(timings: dict, t_wait: float) -> None:
    """A step's waits for mapping add up under ``mapping_wait`` (ms); they count in its tracking time."""
    timings["mapping_wait"] = timings.get("mapping_wait", 0.0) + 1000 * (time.perf_counter() - t_wait)


class System:
    def __init__(self, camera: Camera, options: SlamOptions | None = None):
        self.camera = camera
        self.options = options or SlamOptions()
        self._extractor = OrbExtractor(self.options.orb)
        self._play_extractor = None  # slam.extractor_process.ProcessExtractor, started by the first Play
        self._prefetched = None      # (frame index, image) sent ahead to the extraction process
        self.map_lock = MapLock()
        self._mapper: BackgroundMapper | None = None
        # ORB-SLAM's InterruptBA: set by tracking when it wants a keyframe while mapping is busy; local BA
        # polls it as its progress object and stops after the current iteration.
        self._interrupt_ba = CallbackProgress()
        # Set by the mapping thread once a keyframe's new points are in (before its local BA).
        self._points_ready = threading.Event()
        self.mapping_log: list[dict] = []   # background mode: one entry per keyframe mapped on the thread
        self.reset()

    # --- state ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything: map, trajectory, initialisation (the mapping mode stays). It is also the way on
        after a failure of the mapping thread, which left the map half updated."""
        if self._mapper is not None:
            self._mapper.discard_failure()
        self.mapping_log = []
        self.map = SlamMap(self.options.mapping.distinctive_descriptors)
        self.state = TrackingState.INIT
        self.initializer = Initializer(self.camera, self.options.init)
        self.initialized_at_frame: int | None = None
        self._last: Frame | None = None
        self._velocity: Rigid3d | None = None          # last_from_previous
        self._last_keyframe = -1
        self._last_keyframe_frame = -1
        self._reference_kf = -1
        self._rotation_frames = 0                      # consecutive frames posed by rotation alone
        self._deferred_keyframe: Frame | None = None   # Play: a frame that needs a keyframe now, mapping being busy
        self._map_before_tracking = False              # Play: the next frame waits for that keyframe's new points
        self._frame_count = 0
        self._drop_prefetch()
        self._current_ref = None
        # Per processed frame: timestamp, reference keyframe (-1: no pose), pose relative to it.
        self.frame_timestamps: list[float] = []
        self.frame_reference_kf: list[int] = []
        self.frame_cam_from_ref: list[Rigid3d | None] = []
        self.frame_refs: list = []
        self.frame_matches: list = []   # slam.frame_refinement.FrameMatches of map-posed frames, else None
        self._kept_frames = KeptFrames(self.options.rotation_refinement)  # images around rotation-only frames
        self._refined_state: bytes | None = None   # what finish() last refined (slam.frame_refinement)
        self.recognizer = PlaceRecognizer(self.options.bow)
        self.loop_closer = LoopCloser(self.options.loop)
        self.loop_events: list[LoopEvent] = []

    @property
    def num_keyframes(self) -> int:
        return self.map.num_keyframes

    # --- mapping mode -------------------------------------------------------------------------------
    @property
    def background_mapping(self) -> bool:
        return self._mapper is not None

    def set_background_mapping(self, enabled: bool) -> None:
        """Play mode (True): local mapping on its own thread. Step mode (False): queued keyframes are finished
        first, then every step maps synchronously again."""
        if enabled and self._mapper is None:
            self.prepare_play()
            self._mapper = BackgroundMapper(self._map_keyframe_in_background)
        elif not enabled and self._mapper is not None:
            self._mapper.raise_failure()  # nor may Step mode go on from a map that a failure left half updated
            self._close_mapper()

    def _close_mapper(self) -> None:
        mapper, self._mapper = self._mapper, None
        mapper.close()

    def reading(self):
        """Context manager around reads of the map (or a tracking step): with background mapping it holds
        ``map_lock`` with tracking's priority, otherwise it does nothing."""
        return self.map_lock.priority() if self._mapper is not None else NO_LOCK.priority()

    def wait_for_mapping(self) -> None:
        """Return once every inserted keyframe is mapped (at once in synchronous mode)."""
        if self._mapper is not None:
            self._mapper.wait_idle()

    def close(self) -> None:
        """End the local-mapping thread and the extraction process, if any (the map stays readable)."""
        if self._mapper is not None:
            self._close_mapper()
        self._stop_play_extractor()

    def prepare_play(self, wait: bool = False) -> None:
        """Start Play's extraction process now (Play starts it otherwise); ``wait``: until it is ready."""
        if self._play_extractor is None and self.options.play_extraction_process:
            from slam.extractor_process import ProcessExtractor
            try:
                self._play_extractor = ProcessExtractor(self.options.orb)
            except OSError as exc:  # Play still works, extracting in this process
                log.warning("SLAM: ORB extraction stays in this process (%s)", exc)
                return
        if wait and self._play_extractor is not None:
            try:
                self._play_extractor.wait_ready()
            except (EOFError, OSError) as exc:
                log.warning("SLAM: ORB extraction stays in this process (%s)", exc)
                self._stop_play_extractor()

    def _stop_play_extractor(self) -> None:
        extractor, self._play_extractor = self._play_extractor, None
        self._prefetched = None
        if extractor is not None:
            extractor.close()

    def _lose_play_extractor(self, exc: BaseException) -> None:
        log.warning("SLAM: the ORB extraction process ended (%s); extracting in this process", exc)
        self._stop_play_extractor()

    def _extraction_process(self):
        """The extraction process when this step extracts there (Play, process running), else None."""
        return self._play_extractor if self._mapper is not None else None

    def _extract(self, index: int, image, img):
        """Features of frame ``index`` (``image`` as given to step, ``img`` checked): in the extraction process
        during Play, started by the last step when it was given this image ahead, else here (same features)."""
        extractor = self._extraction_process()
        if extractor is not None:
            try:
                if extractor.pending and self._prefetched is not None \
                        and self._prefetched[0] == index and _same_array(self._prefetched[1], image):
                    return extractor.collect()
                self._drop_prefetch()
                return extractor.extract(img, self.camera)
            except (EOFError, OSError) as exc:  # the process died: carry on here, nothing is lost
                self._lose_play_extractor(exc)
        return self._extractor.extract(img, self.camera)

    def _prefetch(self, next_image) -> None:
        """Play: send the next frame to the extraction process now, so it is extracted while this frame is
        tracked (the two cores work at once; the next step collects the features)."""
        extractor = self._extraction_process()
        if next_image is None or extractor is None:
            return
        try:
            self._drop_prefetch()
            extractor.submit(self._check_image(next_image), self.camera)
        except ParallaxError:
            return  # the next step reports the unusable frame itself
        except (EOFError, OSError) as exc:
            self._lose_play_extractor(exc)
            return
        self._prefetched = (self._frame_count, next_image)  # held: no other array can take its memory

    def _drop_prefetch(self) -> None:
        """Read and discard a reply nobody will collect (a prefetched frame that was not stepped next)."""
        self._prefetched = None
        extractor = self._play_extractor
        if extractor is not None and extractor.pending:
            try:
                extractor.collect()
            except (ParallaxError, ValueError, TypeError, cv2.error):
                pass  # that frame's error; it was not stepped
            except (EOFError, OSError) as exc:
                self._lose_play_extractor(exc)

    @property
    def loop_closures(self) -> int:
        return self.loop_closer.loop_closures

    # --- one frame ----------------------------------------------------------------------------------
    def step(self, image, timestamp: float | None = None, ref=None, next_image=None) -> StepResult:
        """Track one frame. ``next_image``: the image the next call will be given, when the caller reads ahead
        (Play): in Play mode its features are extracted while this frame is tracked. That call must be given the
        same array (or a view of the same pixels), unchanged; any other image is extracted as usual."""
        t_start = time.perf_counter()
        if self._mapper is not None:
            # After a failure of the mapping thread the map is half updated: no frame is tracked against it.
            self._mapper.raise_failure()
        index = self._frame_count
        self._frame_count += 1
        timestamp = float(index if timestamp is None else timestamp)
        timings: dict = {}
        try:
            img = self._check_image(image)
            features = self._extract(index, image, img)
        except (ParallaxError, ValueError, TypeError, cv2.error) as exc:
            self._prefetch(next_image)
            return self._failed(index, timestamp, f"unusable frame: {exc}", timings, t_start, ref)
        self._prefetch(next_image)
        frame = Frame.build(index, timestamp, features, img)
        timings["features"] = 1000 * (time.perf_counter() - t_start)
        if self._map_before_tracking and self._mapper is not None:
            self._wait_for_new_points(timings)
        self._map_before_tracking = False
        t_lock = time.perf_counter()
        with self.reading():
            timings["lock_wait"] = 1000 * (time.perf_counter() - t_lock)
            self._current_ref = ref
            if self.state == TrackingState.INIT:
                result = self._initialize(frame, timings)
            else:
                result = self._track(frame, timings)
            self._record(frame, ref)
        # Frames without a pose yet too: an initialisation's reference frame gets one afterwards.
        self._kept_frames.offer(index, img, features, result.rotation_only)
        if self._deferred_keyframe is not None:
            self._insert_deferred_keyframe(result, timings)
        timings["total"] = 1000 * (time.perf_counter() - t_start)
        result.timings_ms = timings
        return result

    def _check_image(self, image) -> np.ndarray:
        if image is None:
            raise ParallaxError("no image")
        img = np.asarray(image)
        if img.dtype != np.uint8:
            if not np.issubdtype(img.dtype, np.number) or not np.all(np.isfinite(img)):
                raise ParallaxError(f"image of type {img.dtype} has NaN/inf or is not numeric")
            img = np.clip(img, 0, 255).astype(np.uint8)
        if img.ndim not in (2, 3):
            raise ParallaxError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
        return img

    def _failed(self, index, timestamp, reason, timings, t_start, ref) -> StepResult:
        with self.reading():
            if self.state != TrackingState.INIT:
                self.state = TrackingState.LOST
            self.frame_timestamps.append(timestamp)
            self.frame_reference_kf.append(-1)
            self.frame_cam_from_ref.append(None)
            self.frame_refs.append(ref)
            self.frame_matches.append(None)
        timings["total"] = 1000 * (time.perf_counter() - t_start)
        return StepResult(index, timestamp, self.state, None, np.zeros((0, 2)), np.zeros(0, np.int8),
                          np.zeros(0, np.int64), 0, False, reason, timings, loop_closures=self.loop_closures)

    def _result(self, frame: Frame, reason: str = "", keyframe: bool = False, mapping=None,
                loop_closed: bool = False, rotation_only: bool = False) -> StepResult:
        status = np.full(len(frame.point_ids), KP_NEW, np.int8)
        status[frame.outlier] = KP_OUTLIER
        status[frame.point_ids >= 0] = KP_TRACKED
        return StepResult(frame.index, frame.timestamp, self.state, frame.cam_from_world,
                          frame.features.keypoints_xy, status, frame.point_ids.copy(), frame.num_tracked, keyframe,
                          reason, {}, mapping or {}, loop_closed, self.loop_closures, rotation_only)

    def _record(self, frame: Frame, ref) -> None:
        self.frame_timestamps.append(frame.timestamp)
        self.frame_refs.append(ref)
        if frame.cam_from_world is None or self._reference_kf < 0:
            self.frame_reference_kf.append(-1)
            self.frame_cam_from_ref.append(None)
            self.frame_matches.append(None)
        else:
            self.frame_reference_kf.append(self._reference_kf)
            self.frame_cam_from_ref.append(frame.cam_from_world * self.map.kf_pose(self._reference_kf).inverse())
            # A keyframe's frame takes its keyframe's pose at refinement: its matches are not needed.
            keyframe = frame.index == self._last_keyframe_frame
            self.frame_matches.append(None if keyframe else compact_matches(
                frame.point_ids, frame.features.keypoints_xy, self.options.tracking.min_tracked))

    # --- initialisation -------------------------------------------------------------------------------
    def _initialize(self, frame: Frame, timings: dict) -> StepResult:
        t0 = time.perf_counter()
        attempt = self.initializer.add(frame)
        if not attempt.success:
            timings["initialize"] = 1000 * (time.perf_counter() - t0)
            return self._result(frame, attempt.reason)
        ref = attempt.reference
        good = np.flatnonzero(attempt.matches >= 0)
        cam2_from_cam1 = attempt.two_view.cam2_from_cam1
        points = attempt.points_ref[good]
        # Scale: median depth of the reference camera's points.
        scale = self.options.init_median_depth / float(np.median(points[:, 2]))
        points = points * scale
        pose2 = Rigid3d(cam2_from_cam1.quat_wxyz, cam2_from_cam1.translation * scale)
        ref.cam_from_world = Rigid3d()
        frame.cam_from_world = pose2
        m = self.map
        ref_source = self.frame_refs[ref.index] if 0 <= ref.index < len(self.frame_refs) else None
        k0 = insert_keyframe(m, ref, ref=ref_source)
        k1 = insert_keyframe(m, frame, ref=self._current_ref)
        level_scales = ref.features.plan.level_scales
        dist = np.linalg.norm(points, axis=1)
        new = m.add_points(points, ref.features.descriptors[good], ref.rgb[good], 0,
                           dist * level_scales[ref.features.octaves[good]])
        m.add_observations(k0, good, new)
        m.add_observations(k1, attempt.matches[good], new)
        self._initial_ba(k0, k1)
        if self.options.loop.enabled:
            self.recognizer.add_keyframe(k0, m.kf_descriptors[k0])
            self.recognizer.add_keyframe(k1, m.kf_descriptors[k1])
        # Re-normalise the scale after BA (it moves the second camera and the points).
        ids = m.kf_point_ids[k0]
        ids = ids[ids >= 0]
        if len(ids) == 0:
            self.map.clear()
            self.initializer.reset()
            timings["initialize"] = 1000 * (time.perf_counter() - t0)
            return self._result(frame, "initial map lost every point in bundle adjustment")
        s = self.options.init_median_depth / float(np.median(m.xyz[ids][:, 2]))
        m.xyz[:] *= s
        m.kf_trans[k1] *= s
        frame.cam_from_world = m.kf_pose(k1)
        frame.point_ids[:] = -1
        kp = np.flatnonzero(m.kf_point_ids[k1] >= 0)
        frame.point_ids[kp] = m.kf_point_ids[k1][kp]
        self.state = TrackingState.OK
        self.initialized_at_frame = frame.index
        self._last = frame
        self._velocity = None
        self._last_keyframe = k1
        self._last_keyframe_frame = frame.index
        self._reference_kf = k1
        # Frames between the reference and this one stay without a pose; the reference gets one.
        if 0 <= ref.index < len(self.frame_reference_kf):
            self.frame_reference_kf[ref.index] = k0
            self.frame_cam_from_ref[ref.index] = Rigid3d()
        timings["initialize"] = 1000 * (time.perf_counter() - t0)
        return self._result(frame, keyframe=True)

    def _initial_ba(self, k0: int, k1: int) -> None:
        from geometry.bundle_adjustment import BAOptions, BAProblem, bundle_adjust
        from slam.tracking import POSE_GATE_PX

        m = self.map
        obs = np.flatnonzero(m.obs_alive)
        pts = np.flatnonzero(m.alive)
        slot = np.full(m.num_points_total, -1, np.int64)
        slot[pts] = np.arange(len(pts))
        obs_xy, _ = m.observation_keypoints(obs)
        problem = BAProblem([self.camera], np.zeros(2, np.int64), m.kf_quat[[k0, k1]].copy(),
                            m.kf_trans[[k0, k1]].copy(), m.xyz[pts].copy(), m.obs_kf[obs], slot[m.obs_pt[obs]],
                            obs_xy, pose_fixed=np.array([True, False]))
        result = bundle_adjust(problem, BAOptions(max_iterations=self.options.init_ba_iterations, loss="huber",
                                                  loss_scale_px=POSE_GATE_PX))
        m.kf_quat[[k0, k1]] = result.quat_wxyz
        m.kf_trans[[k0, k1]] = result.translation
        m.xyz[pts] = result.points_world
        bad = ~result.observations_used | ~(result.residual_norms_px <= 2 * POSE_GATE_PX)
        m.remove_observations(obs[bad])
        counts = m.observation_counts()
        m.remove_points(pts[counts[pts] < 2])

    # --- tracking ---------------------------------------------------------------------------------------
    def _track(self, frame: Frame, timings: dict) -> StepResult:
        o = self.options.tracking
        t0 = time.perf_counter()
        pose, how = None, ""
        if len(frame.features) == 0:
            reason = "no features in this frame"
        else:
            reason = ""
            radius = o.local_map_radius
            if self.state in (TrackingState.OK, TrackingState.RELOCALIZED) and self._last is not None \
                    and self._last.cam_from_world is not None:
                last_pose = self._last_frame_pose()
                predicted = (self._velocity * last_pose) if self._velocity is not None else last_pose
                pose, _ = track_motion_model(self.camera, self.map, frame, self._last, predicted, o)
                how = "motion"
                if pose is None and self._rotation_frames > 0:
                    # The last frame was posed by rotation alone and holds no map point: look for the local
                    # map's points where the predicted pose puts them.
                    frame.point_ids[:] = -1
                    pose, _ = track_points(self.camera, self.map, frame, self._local_points(), predicted, o)
                if pose is None:
                    frame.point_ids[:] = -1
                    frame.outlier[:] = False
                    pose, _ = track_keyframe(self.camera, self.map, frame, self._last_keyframe, last_pose, o)
                    how = "keyframe"
            if pose is None:
                frame.point_ids[:] = -1
                frame.outlier[:] = False
                pose, _ = relocalize(self.camera, self.map, frame, o)
                how = "relocalization"
                radius = o.relocalization_radius
            if pose is not None:
                pose, tracked, reference = track_local_map(self.camera, self.map, frame, pose, radius, o)
                needed = o.min_relocalization_inliers if how == "relocalization" else o.min_tracked
                if tracked < needed:
                    reason = f"only {tracked} points tracked after the local map search (need {needed})"
                    pose = None
                else:
                    self._reference_kf = reference
            else:
                reason = f"tracking failed (motion model, last keyframe and relocalization)"
            if pose is None:
                rotated = self._track_rotation(frame)
                if rotated is not None:
                    pose, how = rotated[0], ("rotation" if rotated[1] else "rotation+map")
        timings["track"] = 1000 * (time.perf_counter() - t0)
        if pose is None:
            frame.point_ids[:] = -1
            self.state = TrackingState.LOST
            self._velocity = None
            self._rotation_frames = 0
            return self._result(frame, reason)
        frame.cam_from_world = pose
        if self._last is not None and self._last.cam_from_world is not None and how != "relocalization":
            self._velocity = pose * self._last_frame_pose().inverse()
        else:
            self._velocity = None
        self.state = TrackingState.RELOCALIZED if how == "relocalization" else TrackingState.OK
        self._last = frame
        if how == "rotation":  # nothing to triangulate from a turn about the centre: no keyframe
            self._rotation_frames += 1
            return self._result(frame, rotation_only=True)
        self._rotation_frames = 0
        t1 = time.perf_counter()
        mapping_stats: dict = {}
        keyframe = keyframe_needed(self.map, frame, self._reference_kf, frame.index - self._last_keyframe_frame,
                                   self.options.mapping)
        if keyframe and self._mapper is not None:
            # Monocular ORB-SLAM: no keyframe while mapping is busy (tracking goes on against the map as it is).
            # But when frames come faster than mapping takes keyframes and the map is slipping out of view, a
            # fast turn tracks nothing two frames later: then this frame waits for mapping and becomes the
            # keyframe (at the end of ``step``), and the next frame waits for its new points, as in Step mode.
            urgent = keyframe_urgent(self.map, frame, self._reference_kf, self.options.mapping)
            if not self._mapper.idle:
                self._interrupt_ba.request_stop()
                if urgent:
                    self._deferred_keyframe = frame
                keyframe = False
            if keyframe:
                k = self._add_keyframe(frame)
                self._submit_keyframe(k, frame.features.plan)
                self._map_before_tracking = urgent
            timings["mapping"] = 1000 * (time.perf_counter() - t1)
            return self._result(frame, keyframe=keyframe)
        if keyframe:  # local mapping, synchronously
            k = self._add_keyframe(frame)
            plan = frame.features.plan
            mapping_stats = process_keyframe(self.map, self.camera, k, plan.scale_factor, plan.level_scales,
                                             self.options.mapping)
            event = self._close_loop(k, mapping_stats, timings, plan)
            frame.cam_from_world = self.map.kf_pose(k)
            # The keyframe's points after mapping (BA may have dropped some observations, fusion replaced some).
            kp = self.map.kf_point_ids[k]
            frame.point_ids = np.where(kp >= 0, kp, -1)
            if event is not None and self._velocity is not None:
                # The motion model is in the current keyframe's camera units, which the correction rescaled.
                self._velocity = Rigid3d(self._velocity.quat_wxyz,
                                         self._velocity.translation / event.keyframe_scales[k])
        timings["mapping"] = 1000 * (time.perf_counter() - t1)
        return self._result(frame, keyframe=keyframe, mapping=mapping_stats,
                            loop_closed=keyframe and bool(mapping_stats.get("loop")))

    def _insert_deferred_keyframe(self, result: StepResult, timings: dict) -> None:
        """Play: wait for mapping, outside ``map_lock`` (mapping needs it to finish), then insert the deferred
        frame as a keyframe. Mapping may have moved its reference keyframe meanwhile, a loop correction the
        whole map: the frame follows its reference, as the last frame does (``_last_frame_pose``). Its
        matches to points that mapping culled or fused meanwhile are dropped."""
        frame, self._deferred_keyframe = self._deferred_keyframe, None
        self._wait_for_mapper(timings)
        with self.reading():
            i = frame.index
            frame.cam_from_world = self.frame_cam_from_ref[i] * self.map.kf_pose(self.frame_reference_kf[i])
            ids = frame.point_ids
            gone = ids >= 0
            gone[gone] = ~self.map.alive[ids[gone]]
            ids[gone] = -1
            k = self._add_keyframe(frame)
            # A keyframe's frame takes its keyframe's pose (as _record does for one inserted in _track).
            self.frame_reference_kf[i], self.frame_cam_from_ref[i], self.frame_matches[i] = k, Rigid3d(), None
            self._submit_keyframe(k, frame.features.plan)
        self._map_before_tracking = True
        result.cam_from_world, result.keyframe_inserted = frame.cam_from_world, True
        result.keypoint_status[gone] = KP_NEW  # matched points that mapping culled meanwhile
        result.point_ids, result.num_tracked = ids.copy(), frame.num_tracked

    def _add_keyframe(self, frame: Frame) -> int:
        """Insert the frame as a keyframe; it becomes the last keyframe and the reference of the next frames."""
        k = insert_keyframe(self.map, frame, ref=self._current_ref)
        self._last_keyframe, self._last_keyframe_frame, self._reference_kf = k, frame.index, k
        return k

    def _submit_keyframe(self, k: int, plan: PyramidPlan) -> None:
        self._points_ready.clear()
        self._mapper.submit((k, plan))

    def _wait_for_mapper(self, timings: dict) -> None:
        """Wait for background mapping to go idle, outside ``map_lock`` (mapping needs it to finish)."""
        t_wait = time.perf_counter()
        self._mapper.wait_idle()
        _add_mapping_wait(timings, t_wait)

    def _wait_for_new_points(self, timings: dict) -> None:
        """Wait until mapping has triangulated and fused the last keyframe's new points (not for its local BA),
        or has nothing left to do."""
        t_wait = time.perf_counter()
        while not self._points_ready.wait(0.01) and not self._mapper.idle:
            pass
        _add_mapping_wait(timings, t_wait)

    def _local_points(self) -> np.ndarray:
        """Alive points of the reference keyframe and its best covisible keyframes."""
        k = self._reference_kf
        if k < 0:
            return np.zeros(0, np.int64)
        kfs = [k, *self.map.covisible_keyframes(k, self.options.tracking.local_keyframes - 1)]
        return self.map.points_of_keyframes(kfs)

    def _track_rotation(self, frame: Frame) -> tuple[Rigid3d, bool] | None:
        """(pose, rotation only) from the rotation since the previous frame (slam.rotation_tracking), or None.
        Points of the local map that this pose finds give it a map-based pose instead, when there are enough."""
        ro, o, last = self.options.rotation, self.options.tracking, self._last
        if not ro.enabled or last is None or last.cam_from_world is None or last.index != frame.index - 1 \
                or self._rotation_frames >= ro.max_frames:
            return None
        last_pose = self._last_frame_pose()
        predicted = self._velocity.rotation if self._velocity is not None else np.eye(3)
        track = track_rotation(self.camera, frame.features, last.features, frame.grid, predicted, ro,
                               seed=frame.index)
        frame.point_ids[:] = -1
        frame.outlier[:] = False
        if track is None:
            return None
        pose = pose_after_rotation(last_pose, track.cam_from_last)
        mapped, _ = track_points(self.camera, self.map, frame, self._local_points(), pose, o)
        if mapped is not None:
            mapped, tracked, reference = track_local_map(self.camera, self.map, frame, mapped, o.local_map_radius, o)
            if tracked >= o.min_tracked:  # the map is back in view: a full pose, tracked as usual next frame
                self._reference_kf = reference
                return mapped, False
        frame.point_ids[:] = -1
        frame.outlier[:] = False
        return pose, True

    def _map_keyframe_in_background(self, item: tuple[int, PyramidPlan]) -> None:
        """Local mapping and loop closing of keyframe k on the mapping thread (Play mode)."""
        k, plan = item
        t0 = time.perf_counter()
        timings: dict = {}
        with self.map_lock:
            self._interrupt_ba.clear_stop()
            stats = process_keyframe(self.map, self.camera, k, plan.scale_factor, plan.level_scales,
                                     self.options.mapping, self.map_lock, self._interrupt_ba,
                                     points_ready=self._points_ready.set)
            self.map_lock.yield_to_tracking()
            self._close_loop(k, stats, timings, plan, self.map_lock)
        timings["mapping"] = 1000 * (time.perf_counter() - t0)
        self.mapping_log.append({"keyframe": k, "timings_ms": timings, **stats})

    def _last_frame_pose(self) -> Rigid3d:
        """The last frame's pose; with background mapping, re-derived from its reference keyframe, which
        mapping or a loop correction may have moved since (ORB-SLAM's UpdateLastFrame)."""
        last = self._last
        if self._mapper is not None and 0 <= last.index < len(self.frame_reference_kf):
            ref, rel = self.frame_reference_kf[last.index], self.frame_cam_from_ref[last.index]
            if ref >= 0 and rel is not None:
                return rel * self.map.kf_pose(ref)
        return last.cam_from_world

    def _close_loop(self, k: int, stats: dict, timings: dict, plan: PyramidPlan, lock=NO_LOCK) -> LoopEvent | None:
        """Index keyframe k for place recognition and look for a loop (deterministic)."""
        if not self.options.loop.enabled:
            return None
        t0 = time.perf_counter()
        descriptors = self.map.kf_descriptors[k]
        # Only this thread uses the recognizer, and (re)training its vocabulary (up to 55 ms on KITTI) reads
        # no map: tracking may go on meanwhile.
        with lock.released():
            self.recognizer.add_keyframe(k, descriptors)
        event, loop_stats = self.loop_closer.process(self.map, self.camera, self.recognizer, k, plan.level_scales,
                                                     plan.scale_factor, lock)
        stats.update(loop_stats)
        if event is not None:
            self.loop_events.append(event)
            stats["loop"] = event.as_dict()
            # Frames keep their pose relative to their reference keyframe; the correction changed each
            # keyframe's scale, so the relative translations follow it.
            scales = event.keyframe_scales
            for i, (ref, rel) in enumerate(zip(self.frame_reference_kf, self.frame_cam_from_ref)):
                if ref >= 0 and rel is not None and scales[ref] != 1.0:
                    self.frame_cam_from_ref[i] = Rigid3d(rel.quat_wxyz, rel.translation / scales[ref])
            if lock is not NO_LOCK:
                # On the mapping thread: the motion model is in the old map's units and frame, so the next
                # frame predicts from the last pose (re-derived from its corrected reference keyframe).
                self._velocity = None
            # Last, as it drops the lock while it solves: frames tracked meanwhile already see the corrected,
            # rescaled map.
            if self.options.mapping.global_ba_iterations > 0:
                stats["global_ba"] = global_bundle_adjustment(self.map, self.camera, plan.level_scales,
                                                              self.options.mapping, lock)
        timings["loop"] = 1000 * (time.perf_counter() - t0)
        return event

    # --- whole sources ------------------------------------------------------------------------------
    def run(self, source, progress=None, on_step=None) -> RunSummary:
        """Step through every frame of a ``scene.io.sources`` FrameSource. ``progress.report('slam', ...)``
        after each frame; ``progress.should_stop()`` is checked before each frame (the map stays
        consistent). ``on_step(result)`` is called with every StepResult."""
        progress = progress or NullProgress()
        total = len(source)
        t0 = time.perf_counter()
        tracked, track_ms, stopped, n, rotation_only = 0, [], False, 0, 0
        for frame in source:
            if progress.should_stop():
                stopped = True
                break
            result = self.step(frame.image, frame.timestamp, ref=frame.ref)
            n += 1
            tracked += result.cam_from_world is not None
            rotation_only += result.rotation_only
            track_ms.append(result.timings_ms.get("total", 0.0))
            if on_step is not None:
                on_step(result)
            progress.report("slam", n, total, f"{result.state.value} kf={self.map.num_keyframes} "
                                              f"pts={self.map.num_points}")
        return RunSummary(n, tracked, self.initialized_at_frame, self.map.num_keyframes, self.map.num_points,
                          track_ms, time.perf_counter() - t0, stopped, rotation_only)

    # --- results ------------------------------------------------------------------------------------
    def check_intrinsics(self):
        """``slam.intrinsics_check.check_focal`` on this map (after the mapping thread settles): the focal
        length the first keyframes prefer against the given one; None before there is enough map."""
        from slam.intrinsics_check import check_focal
        self.wait_for_mapping()
        with self.reading():
            return check_focal(self.map, self.camera)

    def frame_poses(self) -> list[tuple[float, Rigid3d | None]]:
        """(timestamp, cam_from_world or None) of every processed frame, following the current keyframes.
        With background mapping, call it holding ``map_lock`` (or after ``wait_for_mapping``)."""
        out = []
        for ts, k, rel in zip(self.frame_timestamps, self.frame_reference_kf, self.frame_cam_from_ref):
            out.append((ts, None if k < 0 or rel is None else rel * self.map.kf_pose(k)))
        return out

    def finish(self) -> dict:
        """End of a run (or before an export): wait for the queued keyframes to be mapped, adjust the whole map
        (``options.final_ba_iterations``), solve the centres of the frames posed by rotation alone and of the
        frames around them (``slam.rotation_refinement``; the map settles around the keyframes among them), then
        solve every other map-posed frame's pose again against the map (``slam.frame_refinement``; off with
        ``options.refine_frames``). Tracking may go on afterwards; call it again before the next export."""
        self.wait_for_mapping()
        o = self.options
        with self.reading():
            # Once per state of frames and map: a second export of the same run writes the same poses.
            state = refinement_state(self.map, len(self.frame_timestamps))
            if state == self._refined_state:
                return {}
            stats = {}
            if o.final_ba_iterations > 0 and self._last is not None and self.map.num_keyframes >= 2:
                stats["final_ba"] = global_bundle_adjustment(self.map, self.camera,
                                                             self._last.features.plan.level_scales, o.mapping,
                                                             iterations=o.final_ba_iterations)
                state = refinement_state(self.map, len(self.frame_timestamps))  # the map it moved
            if self._kept_frames.rotation_only:
                stats["rotation_refinement"] = self._refine_rotation_only_frames()
                state = refinement_state(self.map, len(self.frame_timestamps))
            if o.refine_frames:
                stats.update(refine_frame_poses(self.camera, self.map, self.frame_reference_kf,
                                                self.frame_cam_from_ref, self.frame_matches,
                                                o.tracking.min_tracked))
            self._refined_state = state
            return stats

    def _refine_rotation_only_frames(self) -> dict:
        """New poses for the frames posed by rotation alone and the frames around them
        (``slam.rotation_refinement``): the keyframes among them take theirs and the rest of the map settles
        around those; every solved frame keeps its pose relative to its reference keyframe, as every frame's
        pose is kept, and is not solved again against the map afterwards."""
        poses = {i: p for i, (_, p) in enumerate(self.frame_poses()) if p is not None}
        try:
            solved, stats = refine_rotation_only_poses(self.camera, self._kept_frames, poses, self._typical_depth(),
                                                       self.options.rotation_refinement)
        except (ParallaxError, ValueError, ArithmeticError, np.linalg.LinAlgError, cv2.error) as exc:
            # A refinement, not the result: the run is still written, with the centres as tracked.
            log.warning("SLAM: the frames posed by rotation alone keep their tracked centres: %s", exc)
            return {"failed": str(exc)}
        if not solved:
            return stats
        m = self.map
        keyframe_of = {int(f): k for k, f in enumerate(m.kf_frame_index)}
        held = np.zeros(m.num_keyframes, bool)
        for i, pose in solved.items():
            k = keyframe_of.get(i)
            if k is not None:
                m.kf_quat[k], m.kf_trans[k], held[k] = pose.quat_wxyz, pose.translation, True
        stats["map"] = global_bundle_adjustment(m, self.camera, self._last.features.plan.level_scales,
                                                self.options.mapping, iterations=self.options.final_ba_iterations,
                                                held=held)
        for i, pose in solved.items():
            self.frame_cam_from_ref[i] = pose * m.kf_pose(self.frame_reference_kf[i]).inverse()
            self.frame_matches[i] = None   # its pose is this one, not one solved again against the map
        return stats

    def _typical_depth(self) -> float:
        """Median depth of the map's points in the keyframes that see them (map units)."""
        m = self.map
        obs = np.flatnonzero(m.obs_alive & m.alive[m.obs_pt])
        if len(obs) == 0:
            return self.options.init_median_depth
        kf = m.obs_kf[obs]
        rot = quat_wxyz_to_rotation(m.kf_quat[kf])
        depth = np.einsum("ij,ij->i", rot[:, 2, :], m.xyz[m.obs_pt[obs]]) + m.kf_trans[kf, 2]
        depth = depth[np.isfinite(depth) & (depth > 0)]
        return float(np.median(depth)) if len(depth) else self.options.init_median_depth

    def result(self):
        """``slam.export.SlamResult`` (copied arrays, sendable as a message) after ``finish``."""
        from slam.export import result_of
        self.finish()
        return result_of(self)

    def to_scene(self, scene) -> dict:
        from slam.export import write_result
        return write_result(self.result(), scene)
