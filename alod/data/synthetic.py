"""Synthetic driving scenes in BDD100K format: the embedded default dataset.

Every image is a small pinhole-camera picture of a road: sky, horizon, a road
running to a vanishing point with lane markings, sidewalks and buildings
(city), houses and trees (residential) or guard rails and hills (highway).
Objects of the ten det_20 categories stand on the ground plane, so their size
grows toward the bottom of the image, and are painted far to near, so nearer
objects occlude farther ones. Each class has its own look (a car is a wide box
with a dark rear window, wheels and lights; a truck a tall box, a bus a long
body with a window row, a train a very long striped body on a level crossing,
a pedestrian a thin figure with a head, a rider a figure on a two-wheeler,
bicycles thin rings, motorcycles thick small wheels and a body, traffic lights
dark housings with one lit lamp, traffic signs bright shapes on poles).

The pool has the structure active learning needs: many easy look-alike frames
(daytime highway with a few cars) and fewer hard ones (night, fog and rain,
crowded city streets, rare classes, tiny objects). The class frequencies
follow BDD100K's: cars dominate, signs and lights are common, trains are
very rare.

Boxes come from an id map painted alongside the picture: a box is the tight
extent of an object's *visible* pixels (x2/y2 exclusive, clipped to the
image); an object hidden behind nearer ones (under 5 % visible) is not
labeled. Each image's random stream is derived from (seed, split, index), so
splits are independent, generation parallelises, and the same seed gives
byte-identical files.

Labels are written by `alod.data.bdd100k.save_frames`, the same writer used for
real data, into the BDD100K download layout::

    OUT/images/100k/{train,val,test}/<hex8>-<hex8>.jpg
    OUT/labels/det_20/det_{train,val,test}.json
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from alod.data import bdd100k  # labels go through the same writer as real data
from alod.data.categories import NAME_TO_ID
from alod.data.frames import Frame
from alod.fileio import write_json_atomic

SPLITS = ("train", "val", "test")
DEFAULT_SIZE = (320, 180)
JPEG_QUALITY = 90
MARKER = ".alod-synthetic"  # in OUT: this folder holds generated data, safe to regenerate
MAX_OBJECTS = 40
MIN_VISIBLE_FRACTION = 0.15
MIN_VISIBLE_PIXELS = 2

PED = NAME_TO_ID["pedestrian"]
RIDER = NAME_TO_ID["rider"]
CAR = NAME_TO_ID["car"]
TRUCK = NAME_TO_ID["truck"]
BUS = NAME_TO_ID["bus"]
TRAIN = NAME_TO_ID["train"]
MOTO = NAME_TO_ID["motorcycle"]
BIKE = NAME_TO_ID["bicycle"]
LIGHT = NAME_TO_ID["traffic light"]
SIGN = NAME_TO_ID["traffic sign"]

_OCCLUDER = 255  # id-map value of unlabeled things that hide objects (poles, hood)
_LANE = 3.5  # lane width in metres

# --------------------------------------------------------------------------- domains

SCENES = ("highway", "city street", "residential")
TIMES_OF_DAY = ("daytime", "night", "dawn/dusk")
WEATHERS = ("clear", "partly cloudy", "overcast", "rainy", "foggy", "snowy")


@dataclass(frozen=True)
class Domain:
    """What scenes of a domain may contain: classes (det_20 ids), times of day, weathers."""

    name: str
    classes: frozenset[int]
    times_of_day: tuple[str, ...]
    weathers: tuple[str, ...]
    description: str
    # The generator's mix, BDD100K's by default (as `target` draws it): scene probabilities
    # (SCENES order), a factor on _plan's per-class rates by rate key, and the share of scenes
    # at a level crossing (a train).
    scene_p: tuple[float, float, float] = (0.45, 0.37, 0.18)
    rate_factors: tuple[tuple[str, float], ...] = ()
    rail_p: float = 0.01


# `source` differs from `target` the way COCO differs from BDD100K: a detector
# trained on it has never seen riders, traffic signs or the rare vehicles, nor
# night, rain, fog or snow, so what a target image is worth depends on what it
# shows that the source lacked. `target` is the full generator (all of BDD100K's
# classes and conditions); its files are byte-identical to those alod wrote
# before domains existed. `urban` keeps target's classes and conditions but makes the
# classes BDD100K keeps rare (rider, bicycle, motorcycle, bus, train: under 2 % of its boxes
# each) common enough that a few hundred images teach them: with target's mix a 300-image
# pool holds 3-8 boxes of each, which no detector learns, so 4 of the 10 classes that
# mAP50 averages stay at 0 however many of the pool's images are labeled.
DOMAINS: dict[str, Domain] = {
    "target": Domain("target", frozenset(NAME_TO_ID.values()), TIMES_OF_DAY, WEATHERS,
                     "all 10 det_20 classes; daytime, night and dawn/dusk; clear, partly cloudy, overcast, "
                     "rainy, foggy and snowy"),
    "source": Domain("source", frozenset({PED, CAR, TRUCK, BUS, LIGHT}), ("daytime", "dawn/dusk"),
                     ("clear", "partly cloudy", "overcast"),
                     "pedestrian, car, truck, bus and traffic light only (no rider, train, motorcycle, "
                     "bicycle or traffic sign); daytime and dawn/dusk; clear, partly cloudy or overcast"),
    "urban": Domain("urban", frozenset(NAME_TO_ID.values()), TIMES_OF_DAY, WEATHERS,
                    "all 10 det_20 classes and all conditions of `target`, in city streets (70 %) and "
                    "residential streets (30 %), no highway; on those streets riders, bicycles and "
                    "motorcycles 8x, buses and trucks 3x and level crossings (trains) 10x as common as in `target`, so that "
                    "every class has enough boxes in a few hundred images to be learned",
                    scene_p=(0.0, 0.7, 0.3),
                    rate_factors=(("rider", 8.0), ("bike", 8.0), ("moto", 8.0), ("bus", 3.0), ("truck", 3.0)),
                    rail_p=0.1),
}

# _plan's rate keys that place objects of each class
_RATE_KEYS = {RIDER: ("rider",), SIGN: ("sign", "guide"), BIKE: ("bike",), MOTO: ("moto",),
              LIGHT: ("light",), PED: ("ped",), TRUCK: ("truck",), BUS: ("bus",)}


def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {name!r}; choose one of {sorted(DOMAINS)}")
    return DOMAINS[name]


# --------------------------------------------------------------------------- colours

_CAR_COLOURS = np.array(
    [
        (235, 235, 232), (200, 202, 205), (150, 152, 156), (95, 97, 100), (30, 30, 33),
        (160, 25, 30), (25, 45, 120), (30, 80, 140), (20, 80, 50), (120, 90, 60),
        (210, 180, 40), (220, 110, 30), (90, 30, 60), (170, 170, 150),
    ],
    dtype=np.float32,
)
_TRUCK_COLOURS = np.array(
    [(240, 240, 240), (215, 215, 210), (230, 120, 20), (30, 70, 150), (180, 30, 30), (60, 110, 60)],
    dtype=np.float32,
)
_BUS_COLOURS = np.array(
    [(240, 200, 20), (200, 30, 35), (40, 90, 180), (235, 235, 235), (30, 140, 80)],
    dtype=np.float32,
)
_TRAIN_COLOURS = np.array(
    [(225, 225, 225), (180, 30, 30), (40, 60, 140), (230, 200, 40), (70, 75, 80)],
    dtype=np.float32,
)
_CLOTH = np.array(
    [
        (20, 20, 25), (40, 45, 80), (200, 30, 35), (230, 230, 230), (120, 120, 120),
        (30, 100, 60), (220, 170, 40), (90, 50, 110), (140, 90, 60), (60, 120, 200),
    ],
    dtype=np.float32,
)
_SKIN = np.array([(235, 200, 170), (200, 150, 110), (140, 95, 60), (90, 60, 40)], dtype=np.float32)

# lit lamp colours of a traffic light, top to bottom: red, amber, green
_LAMPS = ((235, 35, 30), (250, 175, 20), (40, 230, 130))


def _jit(rng: np.random.Generator, base, amount: float = 12.0) -> tuple[int, int, int]:
    c = np.asarray(base, dtype=np.float32) + rng.normal(0.0, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _pick(rng: np.random.Generator, palette: np.ndarray, amount: float = 12.0) -> tuple[int, int, int]:
    return _jit(rng, palette[rng.integers(len(palette))], amount)


def _scale(c, f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v * f))) for v in c)


# --------------------------------------------------------------------------- camera


class _Camera:
    """Pinhole camera at height `hc` over a flat road; X right, Y up, Z forward (metres)."""

    def __init__(self, width: int, height: int, rng: np.random.Generator):
        self.W, self.H = width, height
        self.f = width * rng.uniform(0.78, 0.92)
        self.hc = rng.uniform(1.35, 1.65)
        self.yh = height * rng.uniform(0.40, 0.50)
        self.xv = width * (0.5 + rng.uniform(-0.07, 0.07))
        self.z_bottom = self.f * self.hc / (height - self.yh)  # depth seen at the bottom row

    def x(self, X: float, Z: float) -> float:
        return self.xv + self.f * X / Z

    def y(self, Z: float, Y: float = 0.0) -> float:
        return self.yh + self.f * (self.hc - Y) / Z

    def pt(self, X: float, Z: float, Y: float = 0.0) -> tuple[float, float]:
        return (self.xv + self.f * X / Z, self.yh + self.f * (self.hc - Y) / Z)

    def s(self, Z: float) -> float:
        """Pixels per metre at depth Z."""
        return self.f / Z

    def ground_quad(self, X0: float, X1: float, Z0: float, Z1: float) -> list[tuple[float, float]]:
        return [self.pt(X0, Z0), self.pt(X1, Z0), self.pt(X1, Z1), self.pt(X0, Z1)]

    def depth(self, rng: np.random.Generator, near: float = 1.0, far: float = 0.02) -> float:
        """A depth skewed toward far (small) objects: rows below the horizon ~ u**1.5."""
        v = far + (near - far) * rng.uniform() ** 1.5
        return self.z_bottom / v


# --------------------------------------------------------------------------- painter


class _Painter:
    """Draws every shape twice: colour on the picture, object id on the id map.

    Emissive shapes (lamps, lit windows) are drawn in their day colour at once
    and, at night, again after the darkening pass, but only where their object
    is still the visible one.
    """

    def __init__(self, img: Image.Image, night: bool):
        self.img = img
        self.ids = Image.new("L", img.size, 0)
        self.d = ImageDraw.Draw(img)
        self.m = ImageDraw.Draw(self.ids)
        self.night = night
        self.oid = 0
        self.objects: list[tuple[int, int, bool]] = []  # (id, det_20 label, ignore)
        self.glow_img = Image.new("RGB", img.size, 0) if night else None
        self.glow_ids = Image.new("I", img.size, 0) if night else None
        self.gd = ImageDraw.Draw(self.glow_img) if night else None
        self.gm = ImageDraw.Draw(self.glow_ids) if night else None
        self.flares: list[tuple[float, float, float, tuple, float]] = []  # x, y, sigma, colour, gain
        self.areas: dict[int, int] = {}  # id -> pixels right after it was painted
        self.extents: dict[int, tuple[int, int, int, int]] = {}  # id -> x0, y0, x1, y1 then

    def new(self, label: int, ignore: bool = False) -> int:
        if len(self.objects) >= 254:
            raise RuntimeError("too many objects in one scene")
        self.oid = len(self.objects) + 1
        self.objects.append((self.oid, label, ignore))
        return self.oid

    def stuff(self, occluder: bool = False) -> None:
        """Following shapes are unlabeled: background (0) or an occluder (255)."""
        self.oid = _OCCLUDER if occluder else 0

    @staticmethod
    def _box(xy):
        x0, y0, x1, y1 = xy
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def rect(self, xy, fill) -> None:
        xy = self._box(xy)
        self.d.rectangle(xy, fill=fill)
        self.m.rectangle(xy, fill=self.oid)

    def ellipse(self, xy, fill=None, outline=None, width: int = 1) -> None:
        xy = self._box(xy)
        self.d.ellipse(xy, fill=fill, outline=outline, width=width)
        self.m.ellipse(
            xy,
            fill=None if fill is None else self.oid,
            outline=None if outline is None else self.oid,
            width=width,
        )

    def poly(self, pts, fill) -> None:
        self.d.polygon(pts, fill=fill)
        self.m.polygon(pts, fill=self.oid)

    def line(self, pts, fill, width: float = 1) -> None:
        w = max(1, int(round(width)))
        self.d.line(pts, fill=fill, width=w)
        self.m.line(pts, fill=self.oid, width=w)

    def lamp(self, xy, day, night, shape: str = "ellipse", flare: float = 0.0) -> None:
        """An emissive shape: `day` colour by day, re-lit in `night` colour at night."""
        xy = self._box(xy)
        draw = self.d.ellipse if shape == "ellipse" else self.d.rectangle
        mdraw = self.m.ellipse if shape == "ellipse" else self.m.rectangle
        draw(xy, fill=day)
        mdraw(xy, fill=self.oid)
        if self.night:
            gdraw = self.gd.ellipse if shape == "ellipse" else self.gd.rectangle
            gmdraw = self.gm.ellipse if shape == "ellipse" else self.gm.rectangle
            gdraw(xy, fill=night)
            gmdraw(xy, fill=self.oid + 1)
            if flare > 0:
                cx, cy = (xy[0] + xy[2]) / 2, (xy[1] + xy[3]) / 2
                r = max(xy[2] - xy[0], xy[3] - xy[1], 1.0)
                self.flares.append((cx, cy, r * 1.6 + 1.0, night, flare))

    def visible(self) -> np.ndarray:
        """Boolean (H, W) mask of glow pixels whose object is the visible one."""
        g = np.asarray(self.glow_ids, dtype=np.int32)
        ids = np.asarray(self.ids, dtype=np.int32)
        return (g > 0) & (g - 1 == ids)


# --------------------------------------------------------------------------- objects
# Each draws one thing standing at lateral X, depth Z. Sizes in metres; `s` px/m.


def _draw_car(P: _Painter, cam: _Camera, rng, X: float, Z: float, front: bool, ignore=False) -> None:
    s = cam.s(Z)
    kind = rng.choice(3, p=(0.6, 0.3, 0.1))  # sedan, suv, van
    w = (1.8, 1.9, 1.95)[kind] * s * rng.uniform(0.94, 1.06)
    h = (1.45, 1.75, 2.05)[kind] * s * rng.uniform(0.94, 1.06)
    cab_top = (0.58, 0.55, 0.6)[kind]  # fraction of h where the cabin starts
    cx, yb = cam.x(X, Z), cam.y(Z)
    x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h
    colour = _pick(rng, _CAR_COLOURS, 10)
    glass = _jit(rng, (45, 55, 65), 8)
    P.new(CAR, ignore)
    tyre = (22, 22, 24)
    P.rect((x0 + 0.05 * w, yb - 0.22 * h, x0 + 0.25 * w, yb), tyre)
    P.rect((x1 - 0.25 * w, yb - 0.22 * h, x1 - 0.05 * w, yb), tyre)
    P.rect((x0, yb - cab_top * h, x1, yb - 0.13 * h), colour)
    inset = (0.1, 0.06, 0.04)[kind] * w
    P.poly([(x0 + 0.03 * w, yb - cab_top * h), (x1 - 0.03 * w, yb - cab_top * h),
            (x1 - inset - 0.04 * w, y0), (x0 + inset + 0.04 * w, y0)], colour)
    P.poly([(x0 + 0.12 * w, yb - (cab_top + 0.03) * h), (x1 - 0.12 * w, yb - (cab_top + 0.03) * h),
            (x1 - inset - 0.1 * w, y0 + 0.1 * h), (x0 + inset + 0.1 * w, y0 + 0.1 * h)], glass)
    P.rect((x0 + 0.02 * w, yb - 0.2 * h, x1 - 0.02 * w, yb - 0.13 * h), _scale(colour, 0.45))
    if w >= 8:
        P.rect((cx - 0.1 * w, yb - 0.3 * h, cx + 0.1 * w, yb - 0.22 * h), (225, 225, 215))
    ly0, ly1 = yb - 0.48 * h, yb - 0.36 * h
    if front:
        day, night = (235, 235, 215), (255, 250, 225)
    else:
        day, night = (170, 20, 20), (255, 40, 30)
    for lx0, lx1 in ((x0 + 0.03 * w, x0 + 0.2 * w), (x1 - 0.2 * w, x1 - 0.03 * w)):
        P.lamp((lx0, ly0, lx1, ly1), day, night, "rect", flare=1.0 if front else 0.45)


def _draw_car_side(P: _Painter, cam: _Camera, rng, X: float, Z: float, heading: int) -> None:
    s = cam.s(Z)
    L, h = 4.4 * s * rng.uniform(0.9, 1.1), 1.5 * s * rng.uniform(0.93, 1.1)
    cx, yb = cam.x(X, Z), cam.y(Z)
    x0, x1 = cx - L / 2, cx + L / 2
    colour = _pick(rng, _CAR_COLOURS, 10)
    glass = _jit(rng, (45, 55, 65), 8)
    r = 0.19 * h
    P.new(CAR)
    P.rect((x0, yb - 0.58 * h, x1, yb - 0.15 * h), colour)
    # cabin: a trapezoid set back from the bonnet (front is on the heading side)
    a, b = (0.22, 0.8) if heading > 0 else (0.2, 0.78)
    P.poly([(x0 + a * L - 0.05 * L, yb - 0.58 * h), (x0 + b * L + 0.05 * L, yb - 0.58 * h),
            (x0 + b * L - 0.06 * L, yb - h), (x0 + a * L + 0.06 * L, yb - h)], colour)
    P.poly([(x0 + a * L, yb - 0.6 * h), (x0 + b * L, yb - 0.6 * h),
            (x0 + b * L - 0.08 * L, yb - 0.9 * h), (x0 + a * L + 0.08 * L, yb - 0.9 * h)], glass)
    P.rect((x0 + 0.5 * L - 0.01 * L, yb - 0.9 * h, x0 + 0.5 * L + 0.01 * L, yb - 0.6 * h), colour)
    for wx in (x0 + 0.2 * L, x1 - 0.2 * L):
        P.ellipse((wx - r * 1.2, yb - 2.4 * r, wx + r * 1.2, yb), fill=(20, 20, 22))
        P.ellipse((wx - r * 0.5, yb - 1.7 * r, wx + r * 0.5, yb - 0.7 * r), fill=(140, 140, 140))
    fx = x1 - 0.04 * L if heading > 0 else x0 + 0.04 * L
    bx = x0 + 0.04 * L if heading > 0 else x1 - 0.04 * L
    P.lamp((fx - 0.03 * L, yb - 0.5 * h, fx + 0.03 * L, yb - 0.4 * h), (230, 230, 210), (255, 250, 225), "rect", 0.6)
    P.lamp((bx - 0.02 * L, yb - 0.5 * h, bx + 0.02 * L, yb - 0.4 * h), (170, 20, 20), (255, 40, 30), "rect", 0.3)


def _draw_truck(P: _Painter, cam: _Camera, rng, X: float, Z: float, front: bool) -> None:
    """Rear/front view: a tall plain cargo box (rear) or a cab with a windscreen (front)."""
    s = cam.s(Z)
    w, h = 2.5 * s * rng.uniform(0.95, 1.05), rng.uniform(3.3, 3.9) * s
    cx, yb = cam.x(X, Z), cam.y(Z)
    x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h
    body = _pick(rng, _TRUCK_COLOURS, 10)
    P.new(TRUCK)
    tyre = (22, 22, 24)
    P.rect((x0 + 0.04 * w, yb - 0.12 * h, x0 + 0.3 * w, yb), tyre)
    P.rect((x1 - 0.3 * w, yb - 0.12 * h, x1 - 0.04 * w, yb), tyre)
    P.rect((x0 + 0.02 * w, yb - 0.2 * h, x1 - 0.02 * w, yb - 0.04 * h), (35, 35, 38))
    if front:
        cab = _pick(rng, _TRUCK_COLOURS, 10)
        P.rect((x0, y0 + 0.05 * h, x1, yb - 0.2 * h), cab)
        P.rect((x0 + 0.05 * w, y0, x1 - 0.05 * w, y0 + 0.08 * h), body)  # cargo box peeking above
        P.rect((x0 + 0.08 * w, y0 + 0.2 * h, x1 - 0.08 * w, y0 + 0.45 * h), _jit(rng, (50, 60, 70), 6))
        P.rect((x0 + 0.2 * w, yb - 0.45 * h, x1 - 0.2 * w, yb - 0.3 * h), _scale(cab, 0.5))  # grille
        for lx in (x0 + 0.04 * w, x1 - 0.16 * w):
            P.lamp((lx, yb - 0.32 * h, lx + 0.12 * w, yb - 0.25 * h), (235, 235, 215), (255, 250, 225), "rect", 1.2)
    else:
        P.rect((x0, y0, x1, yb - 0.2 * h), body)
        dark = _scale(body, 0.6)
        P.line([(cx, y0 + 0.04 * h), (cx, yb - 0.23 * h)], dark, max(1.0, 0.025 * w))
        P.rect((x0 + 0.02 * w, y0 + 0.02 * h, x1 - 0.02 * w, y0 + 0.05 * h), dark)
        for lx in (x0 + 0.03 * w, x1 - 0.13 * w):
            P.lamp((lx, yb - 0.26 * h, lx + 0.1 * w, yb - 0.21 * h), (170, 20, 20), (255, 40, 30), "rect", 0.5)


def _draw_truck_side(P: _Painter, cam: _Camera, rng, X: float, Z: float, heading: int) -> None:
    """Side view: a cab with a window in front of a taller cargo box, 3 axles."""
    s = cam.s(Z)
    L = rng.uniform(7.5, 10.0) * s
    h = rng.uniform(3.4, 3.9) * s
    cx, yb = cam.x(X, Z), cam.y(Z)
    x0, x1 = cx - L / 2, cx + L / 2
    body = _pick(rng, _TRUCK_COLOURS, 10)
    cab = _pick(rng, _TRUCK_COLOURS, 10)
    P.new(TRUCK)
    cab_l = 0.24 * L
    if heading > 0:
        cab_x0, cab_x1, box_x0, box_x1 = x1 - cab_l, x1, x0, x1 - cab_l - 0.02 * L
    else:
        cab_x0, cab_x1, box_x0, box_x1 = x0, x0 + cab_l, x0 + cab_l + 0.02 * L, x1
    P.rect((x0 + 0.02 * L, yb - 0.2 * h, x1 - 0.02 * L, yb - 0.1 * h), (40, 40, 42))
    P.rect((box_x0, yb - h, box_x1, yb - 0.18 * h), body)
    P.rect((cab_x0, yb - 0.8 * h, cab_x1, yb - 0.12 * h), cab)
    wx0, wx1 = (cab_x0 + 0.35 * cab_l, cab_x1 - 0.08 * cab_l) if heading > 0 else (cab_x0 + 0.08 * cab_l, cab_x1 - 0.35 * cab_l)
    P.rect((wx0, yb - 0.74 * h, wx1, yb - 0.5 * h), _jit(rng, (50, 60, 70), 6))
    r = 0.13 * h
    for f in (0.12, 0.3, 0.85) if heading > 0 else (0.15, 0.7, 0.88):
        wx = x0 + f * L
        P.ellipse((wx - r, yb - 2 * r, wx + r, yb), fill=(20, 20, 22))
    fx = cab_x1 - 0.03 * L if heading > 0 else cab_x0
    P.lamp((fx, yb - 0.3 * h, fx + 0.03 * L, yb - 0.24 * h), (235, 235, 215), (255, 250, 225), "rect", 0.8)


def _draw_bus(P: _Painter, cam: _Camera, rng, X: float, Z: float, front: bool) -> None:
    """Rear/front view: a tall coloured body with a wide dark window and a sign strip."""
    s = cam.s(Z)
    w, h = 2.55 * s * rng.uniform(0.97, 1.03), rng.uniform(3.0, 3.3) * s
    cx, yb = cam.x(X, Z), cam.y(Z)
    x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h
    body = _pick(rng, _BUS_COLOURS, 10)
    P.new(BUS)
    P.rect((x0 + 0.05 * w, yb - 0.1 * h, x0 + 0.28 * w, yb), (22, 22, 24))
    P.rect((x1 - 0.28 * w, yb - 0.1 * h, x1 - 0.05 * w, yb), (22, 22, 24))
    P.rect((x0, y0, x1, yb - 0.07 * h), body)
    P.rect((x0 + 0.06 * w, y0 + 0.16 * h, x1 - 0.06 * w, y0 + (0.6 if front else 0.45) * h), _jit(rng, (40, 50, 60), 6))
    P.lamp((x0 + 0.15 * w, y0 + 0.03 * h, x1 - 0.15 * w, y0 + 0.12 * h), (200, 120, 20), (255, 170, 40), "rect", 0.2)
    P.rect((x0, yb - 0.17 * h, x1, yb - 0.07 * h), _scale(body, 0.4))
    day, night = ((235, 235, 215), (255, 250, 225)) if front else ((170, 20, 20), (255, 40, 30))
    for lx in (x0 + 0.04 * w, x1 - 0.16 * w):
        P.lamp((lx, yb - 0.3 * h, lx + 0.12 * w, yb - 0.22 * h), day, night, "rect", 1.0 if front else 0.5)


def _draw_bus_side(P: _Painter, cam: _Camera, rng, X: float, Z: float, heading: int) -> None:
    """Side view: a long body, a row of windows, a door, a colour stripe, two axles."""
    s = cam.s(Z)
    L, h = rng.uniform(10.5, 12.5) * s, rng.uniform(3.0, 3.3) * s
    cx, yb = cam.x(X, Z), cam.y(Z)
    x0, x1 = cx - L / 2, cx + L / 2
    body = _pick(rng, _BUS_COLOURS, 10)
    glass = _jit(rng, (40, 50, 60), 6)
    P.new(BUS)
    P.rect((x0, yb - h, x1, yb - 0.08 * h), body)
    P.rect((x0, yb - 0.3 * h, x1, yb - 0.22 * h), _pick(rng, _BUS_COLOURS, 10))
    n = int(rng.integers(6, 9))
    pitch = 0.92 * L / n
    for k in range(n):
        wx = x0 + 0.04 * L + k * pitch
        P.rect((wx, yb - 0.86 * h, wx + 0.8 * pitch, yb - 0.5 * h), glass)
    dx = x1 - 0.14 * L if heading > 0 else x0 + 0.06 * L
    P.rect((dx, yb - 0.86 * h, dx + 0.07 * L, yb - 0.1 * h), glass)
    r = 0.14 * h
    for f in (0.18, 0.8):
        wx = x0 + f * L
        P.ellipse((wx - r, yb - 2 * r, wx + r, yb), fill=(20, 20, 22))
    for k in range(n):  # lit windows at night
        wx = x0 + 0.04 * L + k * pitch
        if P.night and rng.uniform() < 0.6:
            P.lamp((wx, yb - 0.86 * h, wx + 0.8 * pitch, yb - 0.5 * h), glass, (200, 190, 140), "rect", 0.0)


def _draw_train(P: _Painter, cam: _Camera, rng, Z: float, heading: int) -> None:
    """Very long striped body with a window row, several coaches, on the level-crossing track."""
    s = cam.s(Z)
    n_cars = int(rng.integers(2, 6))
    coach = 20.0
    gap = 0.8
    X_front = rng.uniform(-12, 12)
    h = rng.uniform(3.6, 4.1) * s
    yb = cam.y(Z) - 0.45 * s  # on the rails' ballast
    body = _pick(rng, _TRAIN_COLOURS, 8)
    stripe = _pick(rng, _TRAIN_COLOURS, 8)
    while stripe == body:
        stripe = _pick(rng, _TRAIN_COLOURS, 8)
    glass = _jit(rng, (40, 50, 60), 6)
    P.new(TRAIN)
    for k in range(n_cars):
        a = X_front - heading * k * (coach + gap)
        b = a - heading * coach
        xa, xb = sorted((cam.x(a, Z), cam.x(b, Z)))
        if xb < -10 or xa > cam.W + 10:
            continue
        L = xb - xa
        P.rect((xa, yb - h, xb, yb - 0.05 * h), body)
        P.rect((xa, yb - 0.3 * h, xb, yb - 0.2 * h), stripe)
        P.rect((xa, yb - 0.93 * h, xb, yb - 0.88 * h), stripe)
        nw = 9
        pitch = L / nw
        for j in range(nw):
            wx = xa + j * pitch + 0.15 * pitch
            P.rect((wx, yb - 0.75 * h, wx + 0.7 * pitch, yb - 0.48 * h), glass)
            if P.night and rng.uniform() < 0.7:
                P.lamp((wx, yb - 0.75 * h, wx + 0.7 * pitch, yb - 0.48 * h), glass, (210, 200, 150), "rect", 0.0)
        for f in (0.12, 0.2, 0.8, 0.88):
            wx = xa + f * L
            r = 0.09 * h
            P.ellipse((wx - r, yb - 2 * r, wx + r, yb), fill=(25, 25, 25))
        if k == 0:  # front lamp
            fx = xb - 0.02 * L if heading > 0 else xa
            P.lamp((fx, yb - 0.4 * h, fx + 0.02 * L, yb - 0.33 * h), (235, 235, 215), (255, 250, 225), "rect", 1.5)


def _draw_person(P: _Painter, cam, rng, cx: float, yb: float, s: float, label=PED, ignore=False, new=True) -> None:
    """A thin figure: head, torso, arms, legs with a walking stride."""
    u = rng.uniform(1.55, 1.9) * s
    if rng.uniform() < 0.08:
        u *= 0.7  # child
    skin = _pick(rng, _SKIN, 8)
    shirt = _pick(rng, _CLOTH, 14)
    pants = _pick(rng, _CLOTH, 10)
    if new:
        P.new(label, ignore)
    stride = rng.uniform(0.0, 0.22) * u
    lw = max(1.0, 0.075 * u)
    hip = yb - 0.48 * u
    P.line([(cx - 0.03 * u, hip), (cx - stride / 2, yb)], pants, lw)
    P.line([(cx + 0.03 * u, hip), (cx + stride / 2, yb)], pants, lw)
    tw = 0.12 * u
    P.poly([(cx - tw, yb - 0.82 * u), (cx + tw, yb - 0.82 * u),
            (cx + 0.8 * tw, hip + 0.03 * u), (cx - 0.8 * tw, hip + 0.03 * u)], shirt)
    aw = max(1.0, 0.05 * u)
    swing = stride * 0.6
    P.line([(cx - tw, yb - 0.8 * u), (cx - tw - 0.02 * u + swing / 2, yb - 0.5 * u)], shirt, aw)
    P.line([(cx + tw, yb - 0.8 * u), (cx + tw + 0.02 * u - swing / 2, yb - 0.5 * u)], shirt, aw)
    r = 0.07 * u
    hy = yb - u + r
    P.ellipse((cx - r, hy - r, cx + r, hy + r), fill=skin)
    if rng.uniform() < 0.7:  # hair / hat
        P.ellipse((cx - r, hy - r, cx + r, hy), fill=_pick(rng, _CLOTH[:2], 10))
    if rng.uniform() < 0.25:  # bag
        P.rect((cx + tw * 0.6, hip - 0.12 * u, cx + tw * 1.4, hip + 0.02 * u), _pick(rng, _CLOTH, 10))


def _draw_pedestrian(P: _Painter, cam: _Camera, rng, X: float, Z: float) -> None:
    _draw_person(P, cam, rng, cam.x(X, Z), cam.y(Z), cam.s(Z))


def _two_wheeler(P: _Painter, rng, cx: float, yb: float, s: float, heading: int, moto: bool) -> tuple:
    """Draw a bicycle (thin large rings, thin frame) or a motorcycle (thick small wheels, body)."""
    d = heading

    def p(xm, ym):
        return (cx + d * xm * s, yb - ym * s)

    if moto:
        P.new(MOTO)
        rw, half = 0.31, 0.68
        for hx in (-half, half):
            c = p(hx, rw)
            P.ellipse((c[0] - rw * s, c[1] - rw * s, c[0] + rw * s, c[1] + rw * s), fill=(18, 18, 20))
            P.ellipse((c[0] - 0.12 * s, c[1] - 0.12 * s, c[0] + 0.12 * s, c[1] + 0.12 * s), fill=(150, 150, 155))
        body = _pick(rng, _CAR_COLOURS, 12)
        P.poly([p(-0.2, 0.28), p(0.28, 0.28), p(0.3, 0.58), p(-0.2, 0.58)], (45, 45, 48))  # engine
        P.poly([p(-0.62, 0.55), p(0.35, 0.62), p(0.55, 0.95), p(0.2, 1.0), p(-0.15, 0.86), p(-0.66, 0.82)], body)
        P.poly([p(-0.6, 0.82), p(-0.1, 0.86), p(-0.12, 0.94), p(-0.58, 0.9)], (25, 25, 25))  # seat
        P.line([p(0.55, 0.95), p(half, rw)], (60, 60, 62), 0.07 * s)  # fork
        P.lamp((p(0.6, 0.98)[0] - 0.06 * s, p(0.6, 0.98)[1] - 0.06 * s, p(0.6, 0.98)[0] + 0.06 * s, p(0.6, 0.98)[1] + 0.06 * s),
               (230, 230, 210), (255, 250, 225), "ellipse", 0.8)
        return p(-0.3, 0.9), p(0.5, 1.08), p(0.2, 0.4)  # hip, hands, foot peg
    P.new(BIKE)
    rw, half = 0.34, 0.52
    tw = max(1, int(round(0.045 * s)))
    for hx in (-half, half):
        c = p(hx, rw)
        P.ellipse((c[0] - rw * s, c[1] - rw * s, c[0] + rw * s, c[1] + rw * s), outline=(20, 20, 20), width=tw)
    frame = _pick(rng, _CAR_COLOURS, 14)
    fw = max(1.0, 0.04 * s)
    R, F, B, S, H = p(-half, rw), p(half, rw), p(-0.05, 0.3), p(-0.2, 0.85), p(0.38, 0.9)
    P.line([R, B, S, R], frame, fw)
    P.line([S, H, B], frame, fw)
    P.line([H, F], frame, fw)
    P.line([H, p(0.33, 1.02)], (40, 40, 40), fw)
    P.line([p(-0.28, 0.88), p(-0.1, 0.88)], (25, 25, 25), fw * 1.5)  # saddle
    return p(-0.2, 0.9), p(0.33, 1.02), p(-0.05, 0.3)


def _draw_rider(P: _Painter, cam, rng, X: float, Z: float, moto: bool, heading: int) -> None:
    """A figure seated on a two-wheeler: the vehicle and the rider are separate boxes."""
    s = cam.s(Z)
    cx, yb = cam.x(X, Z), cam.y(Z)
    hip, hands, foot = _two_wheeler(P, rng, cx, yb, s, heading, moto)
    P.new(RIDER)
    d = heading
    u = rng.uniform(0.95, 1.1) * s  # body scale
    shirt = _pick(rng, _CLOTH, 14)
    pants = _pick(rng, _CLOTH, 10)
    shoulder = (hip[0] + d * 0.18 * u, hip[1] - 0.55 * u)
    knee = (hip[0] + d * 0.35 * u, hip[1] + 0.1 * u)
    P.line([hip, knee, foot], pants, max(1.0, 0.13 * u))
    P.poly([(hip[0] - 0.12 * u, hip[1]), (hip[0] + 0.12 * u, hip[1]),
            (shoulder[0] + 0.12 * u, shoulder[1]), (shoulder[0] - 0.12 * u, shoulder[1])], shirt)
    P.line([shoulder, hands], shirt, max(1.0, 0.08 * u))
    r = 0.12 * u
    hc = (shoulder[0] + d * 0.05 * u, shoulder[1] - 0.14 * u)
    helmet = _pick(rng, _CAR_COLOURS, 10) if moto else _pick(rng, _SKIN, 8)
    P.ellipse((hc[0] - r, hc[1] - r, hc[0] + r, hc[1] + r), fill=helmet)


def _draw_parked_two_wheeler(P: _Painter, cam, rng, X: float, Z: float, moto: bool, heading: int) -> None:
    s = cam.s(Z)
    _two_wheeler(P, rng, cam.x(X, Z), cam.y(Z), s, heading, moto)


def _pole(P: _Painter, x: float, y_ground: float, y_top: float, s: float, colour=(70, 72, 75)) -> None:
    P.stuff(occluder=True)
    w = max(1.0, 0.12 * s)
    P.rect((x - w / 2, y_top, x + w / 2, y_ground), colour)


def _draw_light(P: _Painter, cam, rng, X: float, Z: float, height: float, arm_to: float | None) -> None:
    """A dark housing with three lamps, one lit; on a pole or hanging from an arm."""
    s = cam.s(Z)
    horizontal = rng.uniform() < 0.12
    w, h = (0.36 * s, 1.05 * s) if not horizontal else (1.05 * s, 0.36 * s)
    cx, yg = cam.x(X, Z), cam.y(Z)
    y_bottom = cam.y(Z, height)
    y_top = y_bottom - h
    if arm_to is None:
        _pole(P, cx, yg, y_top + 0.3 * h, s)
    else:
        px = cam.x(arm_to, Z)
        _pole(P, px, yg, y_top - 0.1 * s, s)
        P.stuff(occluder=True)
        P.line([(px, y_top - 0.05 * s), (cx, y_top - 0.05 * s)], (70, 72, 75), max(1.0, 0.1 * s))
    housing = _jit(rng, (32, 33, 30), 6) if rng.uniform() < 0.8 else _jit(rng, (150, 130, 40), 10)
    P.new(LIGHT)
    P.rect((cx - w / 2, y_top, cx + w / 2, y_bottom), housing)
    lit = int(rng.choice(3, p=(0.45, 0.1, 0.45)))
    r = 0.13 * s
    for k in range(3):
        if horizontal:
            lx, ly = cx - w / 2 + (k + 0.5) * w / 3, y_top + h / 2
        else:
            lx, ly = cx, y_top + (k + 0.5) * h / 3
        box = (lx - r, ly - r, lx + r, ly + r)
        if k == lit:
            P.lamp(box, _LAMPS[k], _LAMPS[k], "ellipse", 1.2)
        else:
            P.ellipse(box, fill=(62, 62, 58))


def _draw_sign(P: _Painter, cam, rng, X: float, Z: float, height: float, guide: bool, pole: bool = True) -> None:
    """A bright flat shape on a pole: round, triangle, octagon, diamond, square or a big guide sign."""
    s = cam.s(Z)
    cx, yg = cam.x(X, Z), cam.y(Z)
    y_bottom = cam.y(Z, height)
    if guide:
        w, h = rng.uniform(2.5, 4.5) * s, rng.uniform(1.2, 2.0) * s
    else:
        w = h = rng.uniform(0.6, 0.9) * s
    y_top = y_bottom - h
    if pole:
        if guide:
            _pole(P, cx - 0.35 * w, yg, y_bottom, s)
            _pole(P, cx + 0.35 * w, yg, y_bottom, s)
        else:
            _pole(P, cx, yg, y_bottom, s)
    P.new(SIGN)
    x0, x1 = cx - w / 2, cx + w / 2
    k = 1.0 if not P.night else 0.9  # retro-reflective: stays bright-ish at night

    def lit(c):
        return _scale(c, k)

    if guide:
        green = _jit(rng, (20, 110, 60), 8) if rng.uniform() < 0.8 else _jit(rng, (25, 60, 150), 8)
        P.lamp((x0, y_top, x1, y_bottom), green, lit(green), "rect")
        for j in range(2):
            ty = y_top + (0.3 + 0.35 * j) * h
            P.lamp((x0 + 0.12 * w, ty - 0.05 * h, x0 + rng.uniform(0.5, 0.88) * w, ty + 0.05 * h),
                   (235, 235, 235), lit((235, 235, 235)), "rect")
        return
    shape = int(rng.choice(6, p=(0.3, 0.2, 0.06, 0.12, 0.2, 0.12)))
    red, white, blue, yellow = (200, 25, 30), (240, 240, 240), (30, 70, 170), (240, 200, 30)
    if shape == 0:  # round: red ring, white centre
        P.lamp((x0, y_top, x1, y_bottom), red, lit(red), "ellipse")
        m = 0.18 * w
        P.lamp((x0 + m, y_top + m, x1 - m, y_bottom - m), white, lit(white), "ellipse")
        P.rect((cx - 0.22 * w, y_top + 0.45 * h, cx + 0.22 * w, y_top + 0.55 * h), (30, 30, 30))
    elif shape == 1:  # triangle (warning) or inverted (yield)
        up = rng.uniform() < 0.6
        pts = [(cx, y_top), (x1, y_bottom), (x0, y_bottom)] if up else [(x0, y_top), (x1, y_top), (cx, y_bottom)]
        P.poly(pts, red)
        ic = (cx, (y_top + 2 * y_bottom) / 3) if up else (cx, (2 * y_top + y_bottom) / 3)
        inner = [(ic[0] + 0.55 * (x - ic[0]), ic[1] + 0.55 * (y - ic[1])) for x, y in pts]
        P.poly(inner, white)
    elif shape == 2:  # octagon (stop)
        a = [math.pi / 8 + j * math.pi / 4 for j in range(8)]
        pts = [(cx + 0.5 * w * math.cos(t), (y_top + y_bottom) / 2 + 0.5 * h * math.sin(t)) for t in a]
        P.poly(pts, red)
        P.rect((cx - 0.3 * w, y_top + 0.45 * h, cx + 0.3 * w, y_top + 0.55 * h), white)
    elif shape == 3:  # diamond (yellow with black border)
        pts = [(cx, y_top), (x1, (y_top + y_bottom) / 2), (cx, y_bottom), (x0, (y_top + y_bottom) / 2)]
        P.poly(pts, (20, 20, 20))
        inner = [(cx + 0.8 * (x - cx), (y_top + y_bottom) / 2 + 0.8 * (y - (y_top + y_bottom) / 2)) for x, y in pts]
        P.poly(inner, yellow)
    elif shape == 4:  # blue square / round (mandatory, parking)
        if rng.uniform() < 0.5:
            P.lamp((x0, y_top, x1, y_bottom), blue, lit(blue), "rect")
            P.rect((cx - 0.15 * w, y_top + 0.2 * h, cx + 0.2 * w, y_bottom - 0.2 * h), white)
        else:
            P.lamp((x0, y_top, x1, y_bottom), blue, lit(blue), "ellipse")
            P.line([(cx - 0.25 * w, y_top + 0.5 * h), (cx + 0.25 * w, y_top + 0.5 * h)], white, 0.12 * w)
    else:  # white rectangle with black border (speed limit)
        y_top2 = y_top - 0.3 * h
        P.rect((x0, y_top2, x1, y_bottom), (25, 25, 25))
        P.lamp((x0 + 0.08 * w, y_top2 + 0.08 * h, x1 - 0.08 * w, y_bottom - 0.08 * h), white, lit(white), "rect")
        P.rect((cx - 0.25 * w, y_top + 0.2 * h, cx + 0.25 * w, y_top + 0.35 * h), (25, 25, 25))


def _draw_other_person(P: _Painter, cam, rng, X: float, Z: float) -> None:
    """Ignore region: a dense far crowd, labeled as one `other person` box."""
    s = cam.s(Z)
    P.new(PED, ignore=True)
    for _ in range(int(rng.integers(4, 9))):
        dx = rng.uniform(-1.2, 1.2)
        dz = rng.uniform(-0.5, 0.5)
        _draw_person(P, cam, rng, cam.x(X + dx, Z + dz), cam.y(Z + dz), s, new=False)


def _draw_other_vehicle(P: _Painter, cam, rng, X: float, Z: float) -> None:
    """Ignore region: an odd vehicle (a trailer / cart) labeled `other vehicle`."""
    s = cam.s(Z)
    cx, yb = cam.x(X, Z), cam.y(Z)
    w, h = 2.2 * s, rng.uniform(1.0, 1.8) * s
    P.new(CAR, ignore=True)
    colour = _jit(rng, (200, 160, 40), 25)
    P.rect((cx - w / 2, yb - h, cx + w / 2, yb - 0.25 * h), colour)
    P.rect((cx - w / 2, yb - 1.15 * h, cx + w / 2, yb - h), _scale(colour, 0.6))
    r = 0.22 * h
    for wx in (cx - 0.3 * w, cx + 0.3 * w):
        P.ellipse((wx - r, yb - 2 * r, wx + r, yb), fill=(20, 20, 22))


# --------------------------------------------------------------------------- background


def _sky_and_ground(arr: np.ndarray, cam: _Camera, rng, tod: str, weather: str, scene: str) -> None:
    H, W = arr.shape[:2]
    yh = int(round(cam.yh))
    if weather in ("overcast", "rainy", "snowy", "foggy"):
        top, bottom = _jit(rng, (150, 155, 160), 10), _jit(rng, (195, 198, 200), 8)
    elif tod == "dawn/dusk":
        top, bottom = _jit(rng, (90, 90, 150), 12), _jit(rng, (250, 160, 90), 12)
    else:
        top, bottom = _jit(rng, (70, 130, 210), 12), _jit(rng, (185, 210, 235), 8)
    t = np.linspace(0.0, 1.0, max(yh, 1), dtype=np.float32)[:, None, None]
    arr[:yh] = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    if scene == "highway":
        g0, g1 = _jit(rng, (95, 120, 70), 14), _jit(rng, (120, 140, 85), 14)
    elif scene == "residential":
        g0, g1 = _jit(rng, (80, 115, 60), 12), _jit(rng, (100, 135, 70), 12)
    else:
        g0, g1 = _jit(rng, (120, 118, 112), 8), _jit(rng, (150, 147, 140), 8)
    if weather == "snowy":
        g0, g1 = _jit(rng, (215, 218, 222), 6), _jit(rng, (235, 237, 240), 5)
    n = H - yh
    t = np.linspace(0.0, 1.0, max(n, 1), dtype=np.float32)[:, None, None]
    arr[yh:] = (1 - t) * np.asarray(g0, np.float32) + t * np.asarray(g1, np.float32)


def _clouds(P: _Painter, cam: _Camera, rng, n: int, colour) -> None:
    P.stuff()
    for _ in range(n):
        cx, cy = rng.uniform(0, cam.W), rng.uniform(0, cam.yh * 0.7)
        for _ in range(3):
            w, h = rng.uniform(0.05, 0.15) * cam.W, rng.uniform(0.02, 0.05) * cam.H
            ox, oy = rng.normal(0, w * 0.4), rng.normal(0, h * 0.3)
            P.ellipse((cx + ox - w / 2, cy + oy - h / 2, cx + ox + w / 2, cy + oy + h / 2), fill=_jit(rng, colour, 6))


def _skyline(P: _Painter, cam: _Camera, rng, kind: str) -> None:
    P.stuff()
    yh = cam.yh
    if kind == "hills":
        xs = np.linspace(-10, cam.W + 10, 9)
        ys = yh - rng.uniform(0.0, 0.09, len(xs)) * cam.H
        P.poly([(xs[0], yh + 1)] + list(zip(xs.tolist(), ys.tolist())) + [(xs[-1], yh + 1)], _jit(rng, (90, 110, 95), 10))
    else:
        x = -5.0
        base = _jit(rng, (120, 130, 150), 10)
        while x < cam.W:
            w = rng.uniform(0.02, 0.07) * cam.W
            h = rng.uniform(0.02, 0.16) * cam.H
            P.rect((x, yh - h, x + w, yh + 1), _jit(rng, base, 8))
            x += w * rng.uniform(0.8, 1.1)


def _road(P: _Painter, cam: _Camera, rng, layout: dict, scene: str, weather: str) -> None:
    """Road surface, sidewalks, lane markings, crossing street and rails (ground stuff)."""
    P.stuff()
    zn = cam.z_bottom * 0.6
    zf = 4000.0
    XL, XR = layout["XL"], layout["XR"]
    asphalt = _jit(rng, (78, 80, 84), 6) if weather != "rainy" else _jit(rng, (58, 60, 64), 5)
    if scene != "highway":
        sw = layout["sidewalk"]
        kerb = _jit(rng, (165, 162, 155), 8)
        P.poly(cam.ground_quad(XL - sw, XL, zn, zf), kerb)
        P.poly(cam.ground_quad(XR, XR + sw, zn, zf), kerb)
    else:
        P.poly(cam.ground_quad(XL - 1.5, XR + 1.5, zn, zf), _jit(rng, (110, 108, 100), 6))  # shoulders
    P.poly(cam.ground_quad(XL, XR, zn, zf), asphalt)
    if layout.get("z_int"):
        z0, z1 = layout["z_int"] - 5.0, layout["z_int"] + 5.0
        P.poly(cam.ground_quad(-300, 300, z0, z1), asphalt)
        # zebra crossing on the near side
        stripes = np.arange(XL + 0.3, XR - 0.3, 1.0)
        for x in stripes:
            P.poly(cam.ground_quad(x, x + 0.5, z0 - 3.0, z0), (215, 215, 210))
    if layout.get("z_rail"):
        zr = layout["z_rail"]
        P.poly(cam.ground_quad(-400, 400, zr - 2.2, zr + 2.2), _jit(rng, (105, 95, 85), 6))  # ballast
        for off in (-0.72, 0.72):
            P.poly(cam.ground_quad(-400, 400, zr + off - 0.05, zr + off + 0.05), (150, 150, 155))
    white, yellow = (225, 225, 220), (225, 190, 40)
    paint = [(b, "dash", white) for b in layout["dashes"]]
    if layout.get("centre") is not None:
        paint.append((layout["centre"], "solid", yellow))
    if scene == "highway":
        paint += [(XL + 0.2, "solid", white), (XR - 0.2, "solid", white)]
    lw = 0.075
    blocked = []
    if layout.get("z_int"):
        blocked.append((layout["z_int"] - 8.0, layout["z_int"] + 5.0))
    if layout.get("z_rail"):
        blocked.append((layout["z_rail"] - 2.2, layout["z_rail"] + 2.2))
    phase = rng.uniform(0, 12.0)
    for X, style, colour in paint:
        if style == "solid":
            cuts = [zn] + [z for b in sorted(blocked) for z in b] + [zf]
            for a, b in zip(cuts[::2], cuts[1::2]):
                if b > a:
                    P.poly(cam.ground_quad(X - lw, X + lw, a, b), colour)
        else:
            z = zn + phase
            while z < 200.0:
                if not any(a - 3 < z < b for a, b in blocked):
                    P.poly(cam.ground_quad(X - lw, X + lw, z, z + 3.0), colour)
                z += 12.0


def _buildings(P: _Painter, cam: _Camera, rng, layout: dict, tod: str, residential: bool) -> None:
    """Facades along both sides of the street, farthest first, with window grids."""
    P.stuff()
    faces = []
    for side in (-1, 1):
        edge = (layout["XL"] - layout["sidewalk"]) if side < 0 else (layout["XR"] + layout["sidewalk"])
        z = cam.z_bottom * rng.uniform(0.5, 1.5)
        while z < 160.0:
            length = rng.uniform(8, 25)
            setback = rng.uniform(2, 8) if residential else rng.uniform(0, 0.5)
            height = rng.uniform(5, 9) if residential else rng.uniform(8, 35)
            zi = layout.get("z_int")
            if not (zi and z < zi + 6 and z + length > zi - 6):
                faces.append((z + length, side, edge + side * setback, z, height))
            z += length + (rng.uniform(3, 10) if residential else rng.uniform(0, 2))
    faces.sort(reverse=True)
    palette = [(150, 90, 70), (190, 180, 160), (120, 125, 135), (200, 195, 185), (90, 95, 110), (170, 140, 110)]
    night = tod == "night"
    for z1, _side, X, z0, height in faces:
        colour = _jit(rng, palette[rng.integers(len(palette))], 12)
        quad = [cam.pt(X, z0), cam.pt(X, z1), cam.pt(X, z1, height), cam.pt(X, z0, height)]
        P.poly(quad, colour)
        if residential:  # a roof
            P.poly([cam.pt(X, z0, height), cam.pt(X, z1, height), cam.pt(X, (z0 + z1) / 2, height + 2.5)],
                   _jit(rng, (110, 60, 50), 12))
        floor_px = cam.s(z0) * 3.0
        if floor_px < 3:
            continue
        glass = _jit(rng, (60, 70, 85), 8)
        floors = max(1, int(height / 3.2))
        cols = max(1, int((z1 - z0) / 3.0))
        for k in range(floors):
            y0, y1 = 0.9 + k * 3.2, 2.2 + k * 3.2
            if y1 > height - 0.3:
                break
            P.poly([cam.pt(X, z0 + 0.5, y0), cam.pt(X, z1 - 0.5, y0), cam.pt(X, z1 - 0.5, y1), cam.pt(X, z0 + 0.5, y1)], glass)
        for c in range(cols + 1):
            za = z0 + 0.5 + c * (z1 - z0 - 1.0) / cols
            zb = za + 0.9
            P.poly([cam.pt(X, za - 0.5, 0.6), cam.pt(X, zb - 0.5, 0.6),
                    cam.pt(X, zb - 0.5, height - 0.3), cam.pt(X, za - 0.5, height - 0.3)], colour)
        if night:
            for _ in range(int(rng.integers(0, 2 * floors + 2))):
                k = int(rng.integers(0, floors))
                c = int(rng.integers(0, cols))
                za = z0 + 0.5 + c * (z1 - z0 - 1.0) / cols + 0.4
                zb = za + (z1 - z0 - 1.0) / cols - 0.9
                y0, y1 = 0.9 + k * 3.2, 2.2 + k * 3.2
                if zb <= za or y1 > height:
                    continue
                q = [cam.pt(X, za, y0), cam.pt(X, zb, y1)]
                P.lamp((q[0][0], q[1][1], q[1][0], q[0][1]), glass, _jit(rng, (230, 200, 120), 15), "rect")


def _trees(P: _Painter, cam: _Camera, rng, layout: dict, n: int) -> None:
    P.stuff()
    trees = []
    for _ in range(n):
        side = -1 if rng.uniform() < 0.5 else 1
        edge = layout["XL"] - layout.get("sidewalk", 2) if side < 0 else layout["XR"] + layout.get("sidewalk", 2)
        X = edge + side * rng.uniform(0.5, 10)
        Z = cam.depth(rng, 0.9, 0.03)
        trees.append((Z, X))
    for Z, X in sorted(trees, reverse=True):
        s = cam.s(Z)
        h = rng.uniform(4, 9)
        x, yg = cam.x(X, Z), cam.y(Z)
        P.rect((x - 0.15 * s, cam.y(Z, h * 0.5), x + 0.15 * s, yg), _jit(rng, (80, 60, 40), 8))
        r = rng.uniform(1.5, 3.0) * s
        cy = cam.y(Z, h * 0.7)
        P.ellipse((x - r, cy - r * 1.1, x + r, cy + r * 0.9), fill=_jit(rng, (50, 100, 45), 14))


def _guard_rails(P: _Painter, cam: _Camera, rng, layout: dict) -> None:
    P.stuff()
    for X in (layout["XL"] - 1.2, layout["XR"] + 1.2):
        a, b = cam.z_bottom * 0.6, 600.0
        P.poly([cam.pt(X, a, 0.5), cam.pt(X, b, 0.5), cam.pt(X, b, 0.8), cam.pt(X, a, 0.8)], (175, 178, 180))
        z = a + rng.uniform(0, 4)
        while z < 80:
            P.line([cam.pt(X, z, 0.0), cam.pt(X, z, 0.8)], (120, 120, 120), max(1.0, 0.1 * cam.s(z)))
            z += 4.0


def _street_lamps(P: _Painter, cam: _Camera, rng, layout: dict, night: bool) -> None:
    """Lamp posts along the kerbs; their lamps glow at night (distractors for traffic lights)."""
    side_x = (layout["XL"] - 0.6, layout["XR"] + 0.6)
    z = cam.z_bottom * rng.uniform(0.8, 2.0)
    items = []
    while z < 150:
        items.append((z, side_x[int(rng.integers(2))]))
        z += rng.uniform(20, 35)
    for Z, X in sorted(items, reverse=True):
        s = cam.s(Z)
        x, yg, yt = cam.x(X, Z), cam.y(Z), cam.y(Z, 8.0)
        _pole(P, x, yg, yt, s, (90, 92, 95))
        P.stuff(occluder=True)
        hx = x + (0.8 * s if X < 0 else -0.8 * s)
        P.line([(x, yt), (hx, yt)], (90, 92, 95), max(1.0, 0.12 * s))
        P.lamp((hx - 0.3 * s, yt - 0.1 * s, hx + 0.3 * s, yt + 0.15 * s), (200, 200, 190), (255, 225, 160),
               "ellipse", 1.6 if night else 0)


# --------------------------------------------------------------------------- scene


def _scene_params(rng, domain: "Domain") -> tuple[str, str, str, bool]:
    scene = str(rng.choice(list(SCENES), p=domain.scene_p))
    tod_p = {"highway": (0.8, 0.14, 0.06), "city street": (0.52, 0.38, 0.10), "residential": (0.68, 0.22, 0.10)}[scene]
    tod = str(_choice(rng, TIMES_OF_DAY, tod_p, domain.times_of_day))
    w_p = (0.66, 0.14, 0.1, 0.05, 0.03, 0.02) if scene == "highway" else (0.45, 0.12, 0.18, 0.12, 0.07, 0.06)
    weather = str(_choice(rng, WEATHERS, w_p, domain.weathers))
    crowded = scene == "city street" and rng.uniform() < 0.3
    return scene, tod, weather, crowded


def _choice(rng, values: tuple[str, ...], p: tuple[float, ...], allowed: tuple[str, ...]) -> str:
    """rng.choice over the allowed values, with their probabilities renormalised."""
    if allowed == values:  # the target domain: exactly the draw it always made
        return rng.choice(list(values), p=p)
    keep = [(v, q) for v, q in zip(values, p) if v in allowed]
    total = sum(q for _, q in keep)
    return rng.choice([v for v, _ in keep], p=[q / total for _, q in keep])


def _layout(cam: _Camera, rng, scene: str) -> dict:
    if scene == "highway":
        own, onc = int(rng.integers(2, 5)), 0
    elif scene == "city street":
        own, onc = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    else:
        own, onc = 1, 1
    ego = int(rng.integers(0, own))  # ego lane among own lanes, counted from the left
    # own lanes are to the right of the oncoming ones; lane k centre at (k - ego - onc) * lane
    XL = -(ego + onc) * _LANE - _LANE / 2
    XR = XL + (own + onc) * _LANE
    lanes_own = [XL + (onc + k + 0.5) * _LANE for k in range(own)]
    lanes_onc = [XL + (k + 0.5) * _LANE for k in range(onc)]
    dashes = [XL + k * _LANE for k in range(1, own + onc) if k != onc]
    centre = XL + onc * _LANE if onc else None
    layout = dict(XL=XL, XR=XR, lanes_own=lanes_own, lanes_onc=lanes_onc, dashes=dashes, centre=centre,
                  sidewalk=rng.uniform(2.5, 4.5) if scene != "highway" else 0.0)
    if scene == "city street" and rng.uniform() < 0.7:
        layout["z_int"] = cam.z_bottom * rng.uniform(3, 12)
    return layout


def _poisson(rng, lam: float) -> int:
    return int(rng.poisson(lam))


def _plan(cam: _Camera, rng, scene: str, crowded: bool, layout: dict, domain: "Domain") -> list[tuple]:
    """Choose the objects: (depth, draw function, args). Class rates follow BDD100K's mix;
    classes the domain lacks get rate 0 (the random stream is drawn all the same)."""
    specs: list[tuple] = []
    XL, XR, sw = layout["XL"], layout["XR"], layout["sidewalk"]
    zi = layout.get("z_int")
    m = rng.uniform(2.5, 4.5) if crowded else 1.0
    occupied: dict[float, list[tuple[float, float]]] = {}

    def lane_slot(X: float, length: float, near=1.0, far=0.02):
        for _ in range(4):
            Z = cam.depth(rng, near, far)
            if Z < cam.z_bottom * 0.75:
                continue
            taken = occupied.setdefault(X, [])
            if all(abs(Z - z) > (length + other) / 2 + 1.5 for z, other in taken):
                taken.append((Z, length))
                return Z
        return None

    rates = {
        "highway": dict(car=5.5, truck=0.2, bus=0.025, sign=0.6, guide=0.3, light=0.0, ped=0.0, rider=0.004,
                        parked=0.0, cross=0.0, bike=0.0, moto=0.002),
        "city street": dict(car=4.0, truck=0.1, bus=0.08, sign=2.2, guide=0.0, light=1.9, ped=1.8, rider=0.08,
                            parked=2.5, cross=1.1, bike=0.05, moto=0.03),
        "residential": dict(car=1.5, truck=0.06, bus=0.015, sign=0.9, guide=0.0, light=0.25, ped=0.7, rider=0.05,
                            parked=2.5, cross=0.0, bike=0.06, moto=0.02),
    }[scene]
    for key, factor in domain.rate_factors:
        rates[key] *= factor
    for cls, keys in _RATE_KEYS.items():
        if cls not in domain.classes:
            rates.update({k: 0.0 for k in keys})

    # traffic in lanes: rear views in own lanes, front views oncoming
    for kind, rate, length in (("car", rates["car"], 4.5), ("truck", rates["truck"], 9.0), ("bus", rates["bus"], 12.0)):
        for _ in range(_poisson(rng, rate * m)):
            lanes = layout["lanes_own"] + layout["lanes_onc"]
            X = lanes[int(rng.integers(len(lanes)))]
            front = X in layout["lanes_onc"]
            Z = lane_slot(X, length)
            if Z is None:
                continue
            X += rng.uniform(-0.35, 0.35)
            fn = {"car": _draw_car, "truck": _draw_truck, "bus": _draw_bus}[kind]
            specs.append((Z, 1, fn, (X, Z, front)))
    # parked cars at the kerbs
    for _ in range(_poisson(rng, rates["parked"] * m)):
        side = -1 if rng.uniform() < 0.5 else 1
        X = (XL + 1.1) if side < 0 else (XR - 1.1)
        Z = lane_slot(X, 4.8)
        if Z is not None:
            specs.append((Z, 1, _draw_car, (X + rng.uniform(-0.2, 0.2), Z, side < 0 and rng.uniform() < 0.5)))
    # cross traffic at the intersection: side views
    if zi:
        for _ in range(_poisson(rng, rates["cross"] * m)):
            lane = 1 if rng.uniform() < 0.5 else -1
            Z = zi + lane * 1.8
            X = rng.uniform(-30, 30)
            heading = lane
            u = rng.uniform()
            if u < 0.88:
                specs.append((Z, 1, _draw_car_side, (X, Z, heading)))
            elif u < 0.95:
                specs.append((Z, 1, _draw_truck_side, (X, Z, heading)))
            else:
                specs.append((Z, 1, _draw_bus_side, (X, Z, heading)))
        if rng.uniform() < 0.04 * m:
            Z = zi + rng.uniform(-1.5, 1.5)
            specs.append((Z, 1, _draw_bus_side, (rng.uniform(-20, 20), Z, 1 if rng.uniform() < 0.5 else -1)))
    # long vehicles seen from the side on other scenes (e.g. across a junction far away)
    if scene != "city street" and rng.uniform() < 0.03:
        Z = cam.z_bottom * rng.uniform(4, 15)
        fn = _draw_truck_side if rng.uniform() < 0.6 else _draw_bus_side
        specs.append((Z, 1, fn, (rng.uniform(-25, 25), Z, 1 if rng.uniform() < 0.5 else -1)))

    def sidewalk_x(side=None):
        side = side if side is not None else (-1 if rng.uniform() < 0.5 else 1)
        return (XL - rng.uniform(0.4, sw - 0.3)) if side < 0 else (XR + rng.uniform(0.4, sw - 0.3))

    # pedestrians on sidewalks and crossing at the zebra
    for _ in range(_poisson(rng, rates["ped"] * m)):
        if zi and rng.uniform() < 0.3:
            Z = zi - 6.5 + rng.uniform(-1.2, 1.2)
            X = rng.uniform(XL - 1, XR + 1)
        else:
            Z = cam.depth(rng, 1.1, 0.03)
            X = sidewalk_x()
        specs.append((Z, 1, _draw_pedestrian, (X, Z)))
    # riders on two-wheelers (rider + vehicle), parked bicycles / motorcycles
    for _ in range(_poisson(rng, rates["rider"] * m)):
        moto = rng.uniform() < 0.4
        Z = cam.depth(rng, 1.0, 0.05)
        X = (XR - 0.9) if rng.uniform() < 0.6 else sidewalk_x() if sw else XR - 0.9
        specs.append((Z, 2, _draw_rider, (X, Z, moto, 1 if rng.uniform() < 0.5 else -1)))
    for kind, rate in (("bike", rates["bike"]), ("moto", rates["moto"])):
        for _ in range(_poisson(rng, rate * m)):
            Z = cam.depth(rng, 1.0, 0.05)
            X = sidewalk_x() if sw else XR + 0.8
            specs.append((Z, 1, _draw_parked_two_wheeler, (X, Z, kind == "moto", 1 if rng.uniform() < 0.5 else -1)))
    # traffic lights: at the intersection (kerb poles and hanging over lanes), elsewhere on poles
    n_lights = _poisson(rng, rates["light"] * m)
    for j in range(n_lights):
        if zi and j < 6:
            Z = zi - 5.5 + rng.uniform(-0.5, 0.5) if j % 2 == 0 else zi + 5.5 + rng.uniform(-0.5, 0.5)
            if rng.uniform() < 0.5:
                X = rng.uniform(XL + 0.5, XR - 0.5)
                arm = XR + 0.6 if X > (XL + XR) / 2 else XL - 0.6
                specs.append((Z, 1, _draw_light, (X, Z, rng.uniform(4.8, 5.8), arm)))
            else:
                X = XL - 0.6 if rng.uniform() < 0.5 else XR + 0.6
                specs.append((Z, 1, _draw_light, (X, Z, rng.uniform(2.4, 3.4), None)))
        else:
            Z = cam.depth(rng, 0.35, 0.02)
            X = XL - 0.6 if rng.uniform() < 0.4 else XR + 0.6
            specs.append((Z, 1, _draw_light, (X, Z, rng.uniform(2.4, 5.0), None)))
    # traffic signs on poles along the road, big guide signs on highways
    for _ in range(_poisson(rng, rates["sign"] * m)):
        Z = cam.depth(rng, 0.5, 0.02)
        side = -1 if rng.uniform() < 0.35 else 1
        X = (XL - rng.uniform(0.3, 1.5 if sw else 3.0)) if side < 0 else (XR + rng.uniform(0.3, 1.5 if sw else 3.0))
        specs.append((Z, 1, _draw_sign, (X, Z, rng.uniform(1.8, 3.2), False)))
    for _ in range(_poisson(rng, rates["guide"])):
        Z = cam.depth(rng, 0.3, 0.03)
        X = XR + rng.uniform(1.5, 4.0)
        specs.append((Z, 1, _draw_sign, (X, Z, rng.uniform(3.5, 5.5), True)))
    # ignore regions, few
    if rng.uniform() < 0.015:
        Z = cam.depth(rng, 0.25, 0.04)
        specs.append((Z, 1, _draw_other_person, (sidewalk_x() if sw else XR + 2.0, Z)))
    if rng.uniform() < 0.012:
        lanes = layout["lanes_own"]
        X = lanes[int(rng.integers(len(lanes)))]
        Z = lane_slot(X, 5.0)
        if Z is not None:
            specs.append((Z, 1, _draw_other_vehicle, (X, Z)))

    # cap the number of boxes, dropping the farthest first
    specs.sort(key=lambda t: t[0])
    out, n = [], 0
    for spec in specs:
        if n + spec[1] > MAX_OBJECTS:
            continue
        out.append(spec)
        n += spec[1]
    return out


def _flare(acc: np.ndarray, x: float, y: float, sigma: float, colour, gain: float) -> None:
    H, W = acc.shape[:2]
    r = int(3 * sigma) + 1
    x0, x1 = max(0, int(x) - r), min(W, int(x) + r + 1)
    y0, y1 = max(0, int(y) - r), min(H, int(y) + r + 1)
    if x0 >= x1 or y0 >= y1:
        return
    gx = np.exp(-0.5 * ((np.arange(x0, x1, dtype=np.float32) - x) / sigma) ** 2)
    gy = np.exp(-0.5 * ((np.arange(y0, y1, dtype=np.float32) - y) / sigma) ** 2)
    acc[y0:y1, x0:x1] += gain * (gy[:, None] * gx[None, :])[:, :, None] * np.asarray(colour, np.float32)


_GRAIN_PAD = 97
_GRAIN: dict[tuple[int, int], np.ndarray] = {}


def _grain_bank(width: int, height: int) -> np.ndarray:
    """Fixed unit Gaussian noise, a little larger than the image; each image takes a random window.

    Drawing fresh Gaussian noise per pixel costs more than painting the scene;
    a window of a fixed (seeded, so reproducible) bank looks the same.
    """
    key = (width, height)
    if key not in _GRAIN:
        bank = np.random.default_rng(20180512).standard_normal((height + _GRAIN_PAD, width + _GRAIN_PAD, 3), dtype=np.float32)
        _GRAIN[key] = bank
    return _GRAIN[key]


def _finish(img: Image.Image, P: _Painter, cam: _Camera, rng, tod: str, weather: str) -> np.ndarray:
    """Lighting, glare, weather and sensor noise on the painted picture."""
    arr = np.asarray(img, dtype=np.float32)
    H, W = arr.shape[:2]
    if tod == "night":
        arr *= np.array([0.2, 0.22, 0.3], np.float32) * rng.uniform(0.8, 1.2)
        glow = np.asarray(P.glow_img, dtype=np.float32)
        vis = P.visible()
        arr[vis] = glow[vis]
        acc = np.zeros_like(arr)
        gid = np.asarray(P.glow_ids, dtype=np.int32)
        ids = np.asarray(P.ids, dtype=np.int32)
        for x, y, sigma, colour, gain in P.flares:
            xi, yi = int(min(max(x, 0), W - 1)), int(min(max(y, 0), H - 1))
            if gid[yi, xi] - 1 == ids[yi, xi]:
                _flare(acc, x, y, sigma, colour, 0.35 * gain)
        # own headlights on the road ahead
        ys = np.arange(H, dtype=np.float32)[:, None]
        xs = np.arange(W, dtype=np.float32)[None, :]
        beam = np.exp(-0.5 * ((xs - cam.xv) / (0.22 * W)) ** 2) * np.clip((ys - cam.yh) / (H - cam.yh), 0, 1) ** 2.5
        acc += (rng.uniform(40, 80) * beam)[:, :, None] * np.array([1.0, 0.95, 0.8], np.float32)
        arr += acc
    elif tod == "dawn/dusk":
        arr *= np.array([0.8, 0.68, 0.62], np.float32) * rng.uniform(0.85, 1.1)
    if weather == "foggy":
        rows = np.arange(H, dtype=np.float32)
        dist = np.where(rows < cam.yh, 1.0, np.exp(-(rows - cam.yh) / (0.25 * (H - cam.yh))))
        alpha = (rng.uniform(0.5, 0.85) * dist)[:, None, None]
        fog = np.array(_jit(rng, (190, 192, 195), 6), np.float32) * (0.3 if tod == "night" else 1.0)
        arr = arr * (1 - alpha) + fog * alpha
    elif weather == "rainy":
        arr = arr * 0.85 + 0.15 * arr.mean()
    elif weather == "overcast":
        arr = arr * 0.92 + 0.08 * arr.mean()
    noise = 4.0 if tod == "daytime" else 7.0
    bank = _grain_bank(W, H)
    oy, ox, oy2, ox2 = (int(v) for v in rng.integers(0, _GRAIN_PAD, 4))
    arr += bank[oy:oy + H, ox:ox + W, :1] * noise  # luminance grain
    arr += bank[oy2:oy2 + H, ox2:ox2 + W] * (noise / 2)  # colour grain
    out = np.clip(arr, 0, 255).astype(np.uint8)
    if weather in ("rainy", "snowy"):
        pic = Image.fromarray(out)
        d = ImageDraw.Draw(pic)
        n = int(rng.integers(150, 400) * W * H / (320 * 180))
        xs = rng.uniform(0, W, n)
        ys = rng.uniform(0, H, n)
        if weather == "rainy":
            ln = rng.uniform(0.02, 0.05, n) * H
            c = (170, 175, 185) if tod != "night" else (90, 95, 110)
            for x, y, dy in zip(xs.tolist(), ys.tolist(), ln.tolist()):
                d.line([(x, y), (x - 0.2 * dy, y + dy)], fill=c, width=1)
        else:
            r = rng.uniform(0.3, 1.3, n)
            for x, y, rr in zip(xs.tolist(), ys.tolist(), r.tolist()):
                d.ellipse((x - rr, y - rr, x + rr, y + rr), fill=(240, 240, 245))
        out = np.asarray(pic)
    return out


def _boxes(P: _Painter, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tight visible boxes from the id map; objects hidden behind others are dropped."""
    ids = np.asarray(P.ids)
    counts = np.bincount(ids.ravel(), minlength=256)
    boxes, labels, ignore = [], [], []
    for oid, label, ign in P.objects:
        n = counts[oid]
        full = P.areas.get(oid, 0)
        if n < MIN_VISIBLE_PIXELS or n < MIN_VISIBLE_FRACTION * full:
            continue
        x0, y0, x1, y1 = P.extents[oid]
        m = ids[y0:y1, x0:x1] == oid
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes.append((x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1))
        labels.append(label)
        ignore.append(ign)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return b, np.asarray(labels, dtype=np.int64), np.asarray(ignore, dtype=bool)


def _measure(P: _Painter, oid: int) -> None:
    """Record an object's drawn area and extent right after it was painted (nothing on top yet)."""
    m = np.asarray(P.ids) == oid
    area = int(np.count_nonzero(m))
    if area:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        P.areas[oid] = area
        P.extents[oid] = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _random_name(rng) -> str:
    a, b = rng.integers(0, 2**32, 2, dtype=np.uint64)
    return f"{int(a):08x}-{int(b):08x}.jpg"


def render_scene(
    rng: np.random.Generator, size: tuple[int, int] = DEFAULT_SIZE, *, name: str | None = None,
    domain: str | Domain = "target",
) -> tuple[np.ndarray, Frame]:
    """Render one driving scene; returns (H, W, 3) uint8 RGB pixels and its labels.

    `size` is (width, height). The frame's boxes are exclusive xyxy, tight around
    each object's visible pixels; `name` defaults to a BDD100K-like name drawn from `rng`.
    `domain` restricts what the scene may contain (see DOMAINS).
    """
    W, H = int(size[0]), int(size[1])
    if W < 16 or H < 16:
        raise ValueError(f"image size {W}x{H} is too small (minimum 16x16)")
    if name is None:
        name = _random_name(rng)
    domain = DOMAINS[domain] if isinstance(domain, str) else domain
    scene, tod, weather, crowded = _scene_params(rng, domain)
    cam = _Camera(W, H, rng)
    layout = _layout(cam, rng, scene)
    if rng.uniform() < domain.rail_p and TRAIN in domain.classes:
        layout["z_rail"] = cam.z_bottom * rng.uniform(3.5, 9)
        layout.pop("z_int", None)

    base = np.empty((H, W, 3), dtype=np.float32)
    _sky_and_ground(base, cam, rng, tod, weather, scene)
    img = Image.fromarray(base.astype(np.uint8))
    night = tod == "night"
    P = _Painter(img, night)
    if weather in ("clear", "partly cloudy") and tod != "night":
        _clouds(P, cam, rng, int(rng.integers(0, 3 if weather == "clear" else 7)), (245, 245, 248))
    _skyline(P, cam, rng, "hills" if scene != "city street" else "city")
    _road(P, cam, rng, layout, scene, weather)
    if scene == "city street":
        _buildings(P, cam, rng, layout, tod, residential=False)
    elif scene == "residential":
        _buildings(P, cam, rng, layout, tod, residential=True)
        _trees(P, cam, rng, layout, int(rng.integers(3, 10)))
    else:
        _guard_rails(P, cam, rng, layout)
        if rng.uniform() < 0.5:
            _trees(P, cam, rng, layout, int(rng.integers(2, 8)))
    if scene != "highway" or rng.uniform() < 0.3:
        _street_lamps(P, cam, rng, layout, night)

    specs = _plan(cam, rng, scene, crowded, layout, domain)
    if layout.get("z_rail"):
        Z = layout["z_rail"]
        specs.append((Z, 1, _draw_train, (Z, 1 if rng.uniform() < 0.5 else -1)))
        Zs = Z - 3.0
        specs.append((Zs, 1, _draw_sign, (layout["XR"] + 1.0, Zs, 2.0, False)))
    specs.sort(key=lambda t: -t[0])  # far to near: nearer objects occlude farther ones
    for _z, _n, fn, args in specs:
        first = len(P.objects)
        fn(P, cam, rng, *args)
        for oid, _l, _i in P.objects[first:]:
            _measure(P, oid)
    if rng.uniform() < 0.35:  # the ego car's hood at the bottom of the frame
        P.stuff(occluder=True)
        hh = rng.uniform(0.05, 0.1) * H
        P.ellipse((-0.3 * W, H - hh, 1.3 * W, H + 2 * hh), fill=_pick(rng, _CAR_COLOURS[:6], 6))
    pixels = _finish(img, P, cam, rng, tod, weather)
    boxes, labels, ignore = _boxes(P, W, H)
    frame = Frame(
        name=name, boxes=boxes, labels=labels, ignore=ignore, width=W, height=H,
        attributes={"weather": weather, "timeofday": tod, "scene": scene},
    )
    return pixels, frame


# --------------------------------------------------------------------------- dataset


def frame_name(seed: int, split: str, index: int, domain: str = "target") -> str:
    """A BDD100K-like image name (`hex8-hex8.jpg`), fixed by (seed, split, index, domain)."""
    key = f"alod-synthetic/{seed}/{split}/{index}" if domain == "target" else f"alod-synthetic/{domain}/{seed}/{split}/{index}"
    h = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return f"{h[:8]}-{h[8:]}.jpg"


def scene_rng(seed: int, split: str, index: int, domain: str = "target") -> np.random.Generator:
    """The random stream of one image: independent of every other image, split and domain."""
    key = [int(seed), SPLITS.index(split), int(index)]
    if domain != "target":  # target keeps the stream it had before domains existed
        key.append(1 + sorted(d for d in DOMAINS if d != "target").index(domain))
    return np.random.default_rng(key)


def _render_one(job: tuple[int, str, int, tuple[int, int], str, str]) -> Frame:
    seed, split, index, size, folder, domain = job
    name = frame_name(seed, split, index, domain)
    pixels, frame = render_scene(scene_rng(seed, split, index, domain), size, name=name, domain=domain)
    Image.fromarray(pixels).save(os.path.join(folder, name), format="JPEG", quality=JPEG_QUALITY)
    return frame


def write_dataset(
    out: str | os.PathLike,
    *,
    train: int,
    val: int,
    test: int = 0,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    workers: int = 1,
    overwrite: bool = False,
    domain: str = "target",
) -> dict[str, Path]:
    """Write a synthetic dataset in the BDD100K download layout; returns split -> label file.

    Images go to ``OUT/images/100k/<split>/`` and labels to
    ``OUT/labels/det_20/det_<split>.json`` (written by `bdd100k.save_frames`).
    Splits with zero images are not written (and removed from a folder alod
    generated before, so the folder never mixes generations). `domain` ("target": everything;
    "source": the restricted domain starting weights are trained on, see DOMAINS). Output is byte-identical for the
    same arguments whatever `workers` is. A split folder or label file that
    exists is replaced when OUT holds a previous synthetic dataset (the marker
    file `.alod-synthetic`), an error otherwise unless `overwrite`: a real
    download is never written over by accident.
    """
    counts = {"train": int(train), "val": int(val), "test": int(test)}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"image counts must be >= 0, got {counts}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    get_domain(domain)
    W, H = int(size[0]), int(size[1])
    if W < 16 or H < 16:
        raise ValueError(f"image size {W}x{H} is too small (minimum 16x16)")
    out = Path(out)
    ours = (out / MARKER).is_file()
    paths: dict[str, tuple[Path, Path]] = {}
    for split, n in counts.items():
        images = out / "images" / "100k" / split
        labels = out / "labels" / "det_20" / f"det_{split}.json"
        if n == 0:
            if ours:  # a split left from an earlier generation would not match the marker
                labels.unlink(missing_ok=True)
                for p in images.glob("*.jpg"):
                    p.unlink()
            continue
        if not (ours or overwrite) and (labels.exists() or (images.is_dir() and any(images.iterdir()))):
            raise FileExistsError(
                f"{out} already holds {split!r} data that alod did not generate ({labels} or {images}); "
                "choose another folder or pass overwrite=True to replace it"
            )
        paths[split] = (labels, images)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        {"generator": __name__, "seed": int(seed), "size": [W, H], "counts": counts,
         **({"domain": domain} if domain != "target" else {})}, out / MARKER
    )
    for _labels, images in paths.values():
        if images.is_dir():
            for p in images.glob("*.jpg"):
                p.unlink()
        images.mkdir(parents=True, exist_ok=True)

    written: dict[str, Path] = {}
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for split, (labels, images) in paths.items():
            jobs = [(int(seed), split, i, (W, H), str(images), domain) for i in range(counts[split])]
            if pool is None:
                frames = [_render_one(j) for j in jobs]
            else:
                chunk = max(1, min(64, len(jobs) // (4 * workers)))
                frames = list(pool.map(_render_one, jobs, chunksize=chunk))
            bdd100k.save_frames(frames, labels)
            written[split] = labels
    finally:
        if pool is not None:
            pool.shutdown()
    return written
