"""Procedural camera frames: a person gesturing (depth) and an object held up (rgb).

Depth is rendered the way a stereo depth camera sees it: metric depth from a pinhole model,
noise that grows with the square of the distance, invalid pixels (0) in clusters, at the
shadow edge beside the person and beyond the maximum range. RGB gets lighting gain, colour
casts, textured backgrounds and sensor noise, so an object is known by its shape, not its
colour.
"""

from __future__ import annotations

import numpy as np

HEIGHT, WIDTH = 48, 64
_FX = 58.0  # focal length in pixels at 64 px width (about 58 degrees horizontal FOV)
_CAM_HEIGHT = 1.0  # metres above the floor
MAX_RANGE_M = 4.5

# gesture -> (left arm angle, right arm angle) in degrees, 0 = pointing to the image's right,
# 90 = up, -90 = hanging down; None marks the arm that points at the camera.
_ARMS: dict[str, tuple[float | None, float | None]] = {
    "point_left": (180.0, -80.0),
    "point_right": (-100.0, 0.0),
    "raised_palm": (-100.0, 90.0),
    "both_arms_up": (120.0, 60.0),
    "arms_out": (180.0, 0.0),
    "point_forward": (-100.0, None),
    "arms_down": (-110.0, -70.0),
}


def _grid() -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    return u - WIDTH / 2 + 0.5, v - HEIGHT / 2 + 0.5


def _capsule(x, y, x0, y0, x1, y1, r):
    """Mask of points within r of the segment (x0,y0)-(x1,y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0, 1)
    return (x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2 <= r * r


def render_depth(gesture: str, rng: np.random.Generator) -> np.ndarray:
    """A (1, H, W) float32 depth frame in metres of a person making ``gesture``; 0 = no data."""
    u, v = _grid()
    fx = _FX * rng.uniform(0.97, 1.03)
    # Background: a wall, and the floor below the horizon.
    wall = rng.uniform(3.0, 4.8)
    depth = np.full((HEIGHT, WIDTH), wall) * (1 + rng.uniform(-0.08, 0.08) * u / WIDTH)
    below = v > 1
    floor = np.where(below, _CAM_HEIGHT * fx / np.maximum(v, 1), np.inf)
    depth = np.minimum(depth, floor)

    # The person, in metres on a plane at distance z; y is up.
    z = rng.uniform(1.3, 2.4)
    px, py = u * z / fx, -v * z / fx
    cx = rng.uniform(-0.35, 0.35)
    scale = rng.uniform(0.9, 1.1)
    shoulder_y = 0.45 * scale + rng.uniform(-0.05, 0.05)
    torso = _capsule(px, py, cx, shoulder_y - 0.1, cx, shoulder_y - 0.65 * scale, 0.2 * scale)
    legs = _capsule(px, py, cx, shoulder_y - 0.7 * scale, cx, -_CAM_HEIGHT, 0.16 * scale)
    head = (px - cx) ** 2 + (py - shoulder_y - 0.2 * scale) ** 2 <= (0.11 * scale) ** 2
    body = torso | legs | head
    person = np.where(body, z, np.inf)

    arm_len = 0.62 * scale
    for side, angle in zip((-1, 1), _ARMS[gesture]):
        sx = cx + side * 0.21 * scale
        if angle is None:  # pointing at the camera: a short arm whose hand comes closer
            hx, hy = sx + side * 0.05, shoulder_y - 0.08
            arm = _capsule(px, py, sx, shoulder_y, hx, hy, 0.07 * scale)
            reach = np.clip(1 - np.hypot(px - hx, py - hy) / 0.15, 0, 1)
            person = np.where(arm, np.minimum(person, z - 0.15 - 0.4 * reach), person)
            continue
        a = np.deg2rad(angle + rng.uniform(-12, 12))
        ex, ey = sx + arm_len * np.cos(a), shoulder_y + arm_len * np.sin(a)
        arm = _capsule(px, py, sx, shoulder_y, ex, ey, 0.05 * scale)
        person = np.where(arm, np.minimum(person, z - 0.05), person)

    depth = np.minimum(depth, person)
    depth = depth + rng.standard_normal(depth.shape) * 0.0015 * depth**2 * rng.uniform(1, 3)

    # Invalid pixels: the stereo shadow left of the person, random clusters, out of range.
    mask = np.isfinite(person)
    shadow = np.roll(mask, -int(rng.integers(1, 3)), axis=1) & ~mask
    holes = rng.random((HEIGHT // 4 + 1, WIDTH // 4 + 1)) < rng.uniform(0.0, 0.08)
    holes = np.kron(holes, np.ones((4, 4), bool))[:HEIGHT, :WIDTH]
    speckle = rng.random(depth.shape) < rng.uniform(0.0, 0.03)
    depth[shadow | holes | speckle | (depth > MAX_RANGE_M)] = 0.0
    return depth[None].astype(np.float32)


def _shape_mask(obj: str, u, v, cx, cy, s, rot):
    c, si = np.cos(rot), np.sin(rot)
    x = ((u - cx) * c + (v - cy) * si) / s
    y = (-(u - cx) * si + (v - cy) * c) / s
    if obj == "cup":
        body = (np.abs(x) <= 0.55) & (np.abs(y) <= 0.7)
        handle = ((x - 0.7) ** 2 + y**2 <= 0.35**2) & ((x - 0.7) ** 2 + y**2 >= 0.18**2) & (x > 0.55)
        return body | handle
    if obj == "box":
        return (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8)
    if obj == "ball":
        return x**2 + y**2 <= 0.85**2
    if obj == "bottle":
        return ((np.abs(x) <= 0.32) & (y >= -0.3) & (y <= 1.0)) | ((np.abs(x) <= 0.13) & (y >= -1.0) & (y < -0.3))
    if obj == "ring":
        r2 = x**2 + y**2
        return (r2 <= 0.9**2) & (r2 >= 0.5**2)
    if obj == "cone":
        return (y <= 0.8) & (y >= -0.9) & (np.abs(x) <= (y + 0.9) * 0.5)
    if obj == "cross":
        return ((np.abs(x) <= 0.22) & (np.abs(y) <= 0.9)) | ((np.abs(y) <= 0.22) & (np.abs(x) <= 0.9))
    raise ValueError(f"unknown object {obj!r}")


def render_rgb(obj: str, rng: np.random.Generator) -> np.ndarray:
    """A (3, H, W) float32 RGB frame (0..255) with ``obj`` held up in a random room."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    base = rng.uniform(40, 200, 3)
    grad = rng.uniform(-60, 60, 3)
    img = base[:, None, None] + grad[:, None, None] * (v / HEIGHT)[None]
    # Texture: coarse blotches, upsampled.
    tex = rng.standard_normal((3, HEIGHT // 8 + 1, WIDTH // 8 + 1)) * rng.uniform(5, 25)
    img = img + np.kron(tex, np.ones((1, 8, 8)))[:, :HEIGHT, :WIDTH]

    s = rng.uniform(8, 14)
    cx = WIDTH / 2 + rng.uniform(-12, 12)
    cy = HEIGHT / 2 + rng.uniform(-8, 8)
    mask = _shape_mask(obj, u, v, cx, cy, s, rng.uniform(-0.35, 0.35))
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - base).sum() < 120:  # keep the object visible against the wall
        colour = rng.uniform(0, 255, 3)
    shade = 1 - 0.25 * ((u - cx) / s)  # light from one side
    img = np.where(mask[None], colour[:, None, None] * shade[None], img)

    gain = rng.uniform(0.5, 1.4)
    cast = rng.uniform(0.8, 1.2, 3)
    img = img * gain * cast[:, None, None] + rng.standard_normal(img.shape) * rng.uniform(2, 10)
    return np.clip(img, 0, 255).astype(np.float32)
