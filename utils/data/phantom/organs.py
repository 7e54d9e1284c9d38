"""The 13 BTCV organs: where each sits, how big it is and its CT numbers, painted over the tissues in
an order that lets small structures win (:meth:`Anatomy.paint`: a later organ overwrites an earlier one).

Places are fractions of the body's bounding box (0 = patient's right / posterior, 1 = left / anterior),
sizes are shares of the body's cross-section (:meth:`_Placement.radii`), both jittered per volume.
"""
from __future__ import annotations

import math

import numpy as np

from utils.data.phantom.anatomy import (
    AORTA,
    ESOPHAGUS,
    GALLBLADDER,
    IVC,
    L_ADRENAL,
    L_KIDNEY,
    LIVER,
    PANCREAS,
    PORTAL_VEIN,
    R_ADRENAL,
    R_KIDNEY,
    SPLEEN,
    STOMACH,
    Anatomy,
    along_path,
    band_ends,
    smooth_1d,
    z_profile,
)


class _Placement:
    """Where and how big an organ is in one volume, drawn from the volume's generator ``A.rng``."""

    def __init__(self, A: Anatomy) -> None:
        self.A, self.rng = A, A.rng
        self.body_area = float(A.body.sum(axis=(0, 1))[A.in_band].mean()) * A.spacing[0] * A.spacing[1] / A.L**2

    def jitter(self, fx, fy, sd=0.012):
        """Body units (u, v) of bounding-box fractions (fx, fy), each moved by N(0, sd) clipped to +-0.03."""
        A, rng = self.A, self.rng
        return A.frac_to_uv(fx + float(np.clip(rng.normal(0, sd), -0.03, 0.03)), fy + float(np.clip(rng.normal(0, sd), -0.03, 0.03)))

    def radii(self, share, aspect, prof, present=None):
        """Semi-axes (r1 >= r2 for aspect >= 1) of an ellipse whose mean area over its slices in the band
        is ``share`` of the body cross-section, given the radius profile along z; sizes +-12 %. (The
        band's slices only: an organ is as big in a longer stack as in the band-only one.)"""
        rng = self.rng
        present = (prof > 0 if present is None else present) & self.A.in_band
        mean_sq = float(np.mean(prof[present] ** 2)) if present.any() else 1.0
        area = share * self.body_area / mean_sq
        r2 = math.sqrt(area / (math.pi * aspect))
        return r2 * aspect * rng.uniform(0.88, 1.12), r2 * rng.uniform(0.88, 1.12)

    def hu_jit(self, base, sd=5.0):
        """A CT number around ``base`` HU: this volume's contrast for one tissue."""
        return base + self.rng.normal(0, sd)

    def wall_angle(self, cu, cv):
        """Angle of the body outline's tangent nearest (cu, cv) -- organs that hug the wall."""
        A = self.A
        return math.atan2(cv / A.b**2, cu / A.a**2) + math.pi / 2


def draw_organs(A: Anatomy) -> None:
    """The 13 BTCV organs, painted so that small structures win."""
    k = _Placement(A)
    _liver(A, k)
    _spleen(A, k)
    _stomach(A, k)
    _kidneys(A, k)
    _pancreas(A, k)
    _gallbladder(A, k)
    _portal_vein(A, k)
    aorta = _ivc_and_aorta(A, k)
    _esophagus(A, k, aorta)
    _adrenals(A, k)


def _liver(A: Anatomy, k: _Placement) -> None:
    """Liver: big right lobe hugging the wall, plus a left lateral segment anteriorly, higher up;
    hepatic vessel branches inside it."""
    rng, t = A.rng, A.t
    # Widest at the top of the band; in a longer stack the dome above it, the inferior tip below.
    prof = (0.72 + 0.4 * np.clip(t, 0, 1) + smooth_1d(rng, t, 0.04)) * band_ends(t, -0.12, 1.75)
    cu, cv = k.jitter(0.31, 0.59)
    r1, r2 = k.radii(0.19, 1.45, prof)
    ang = k.wall_angle(cu, cv) + rng.normal(0, 0.08)
    q, sl = A.blob(cu - 0.03 * (t - 0.5), cv, r1 * prof, r2 * prof, ang, harmonics=A.random_harmonics(0.07))
    liver = np.zeros(A.shape, bool)
    liver[sl] = q < 1
    prof2 = z_profile(t, 0.25 + rng.uniform(-0.05, 0.05), 1.6, 0.5)
    cu2, cv2 = k.jitter(0.52, 0.79)
    l1, l2 = k.radii(0.035, 3.2, prof2)
    q, sl = A.blob(cu2, cv2, l1 * np.sqrt(prof2), l2 * prof2, rng.normal(-0.25, 0.08), harmonics=A.random_harmonics(0.05))
    liver[sl] |= q < 1
    liver_hu = k.hu_jit(100, 6)
    A.paint(LIVER, liver, (slice(None), slice(None)), liver_hu + A.tex((slice(None), slice(None)), 6, 3))
    # Hepatic / portal vessel branches inside the liver (image only; BTCV's liver label includes them).
    ivc_u, ivc_v = A.frac_to_uv(0.47, 0.56)
    for _ in range(4):
        phi = rng.uniform(0.1, 1.4)
        d = 0.12 + 0.3 * (1 - t) * rng.uniform(0.6, 1.2) + rng.uniform(0, 0.1)
        q, sl = A.blob(ivc_u + d * math.cos(phi), ivc_v + d * math.sin(phi), 0.03, 0.022, phi, present=t > rng.uniform(0.2, 0.5))
        m = (q < 1) & (A.label[sl] == LIVER)
        A.image[sl][m] = k.hu_jit(150, 8)


def _spleen(A: Anatomy, k: _Placement) -> None:
    """Spleen: crescent along the posterolateral left wall."""
    rng, t = A.rng, A.t
    prof = (0.65 + 0.45 * np.clip(t, 0, 1) + smooth_1d(rng, t, 0.05)) * band_ends(t, -0.15, 1.3)
    cu, cv = k.jitter(0.82, 0.39)
    r1, r2 = k.radii(0.041, 2.3, prof)
    ang = k.wall_angle(cu, cv) + rng.normal(0, 0.1)
    # In the ellipse's frame +b points to the body's centre: flatten that (medial) side.
    harm = A.random_harmonics(0.05) + [(1, -0.12, -math.pi / 2), (2, 0.06, 0.0)]
    q, sl = A.blob(cu, cv, r1 * prof, r2 * prof, ang, harmonics=harm)
    A.paint(SPLEEN, q < 1, sl, k.hu_jit(110, 6) + A.tex(sl, 5, 3))


def _stomach(A: Anatomy, k: _Placement) -> None:
    """Stomach: wall, fluid, anterior air pocket; bigger higher up (fundus)."""
    rng, t = A.rng, A.t
    prof = (0.75 + 0.35 * np.clip(t, 0, 1) + smooth_1d(rng, t, 0.05)) * band_ends(t, -0.35, 1.55)
    cu, cv = k.jitter(0.62, 0.70)
    r1, r2 = k.radii(0.021, 1.6, prof)
    r1p, r2p = r1 * prof, r2 * prof
    q, sl = A.blob(cu + 0.03 * (t - 0.5), cv, r1p, r2p, rng.uniform(-0.5, 0.5), harmonics=A.random_harmonics(0.1))
    inside = q < 1
    hu = np.where(q > 0.72, k.hu_jit(60, 5), k.hu_jit(12, 4)) + A.tex(sl, 3)
    air_level = cv + rng.uniform(0.1, 0.7) * r2p
    air = (q < 0.72) & (A.V[sl] > air_level)
    hu = np.where(air, -1000.0, hu)
    A.paint(STOMACH, inside, sl, hu)


def _kidneys(A: Anatomy, k: _Placement) -> None:
    """Kidneys: lower part of the stack, oblique beans with the hilum anteromedially; cortex brighter."""
    rng, t = A.rng, A.t
    for lab, (fx, fy), (t0, t1), tilt in (
        (R_KIDNEY, (0.33, 0.40), (-0.3, 0.69), -1),
        (L_KIDNEY, (0.72, 0.39), (-0.25, 0.73), +1),
    ):
        t1 = t1 + rng.uniform(-0.03, 0.03)
        prof = z_profile(t, t0, t1, 0.45)
        cu, cv = k.jitter(fx, fy)
        r1, r2 = k.radii(0.026, 1.55, prof)
        ang = math.pi / 2 + tilt * math.radians(rng.uniform(25, 40))  # long axis: posterolateral -> anteromedial
        r1p, r2p = r1 * prof, r2 * prof
        q, sl = A.blob(cu, cv, r1p, r2p, ang, harmonics=A.random_harmonics(0.04) + [(2, 0.05, 0.0)])
        # Hilum: a notch of sinus fat on the medial side (the ellipse's -b side for the right
        # kidney, +b for the left), on the mid-kidney slices -- the bean shape.
        medial = ang - tilt * math.pi / 2
        qh, _ = A.blob(cu + 0.95 * r2p * math.cos(medial), cv + 0.95 * r2p * math.sin(medial),
                       0.45 * r2p, 0.45 * r2p, 0.0, present=prof > 0.75, box=sl)
        kidney = (q < 1) & ~(qh < 1)
        hu = np.where(q > 0.62, k.hu_jit(190, 6), k.hu_jit(155, 6)) + A.tex(sl, 4)
        A.paint(lab, kidney, sl, hu)


def _pancreas(A: Anatomy, k: _Placement) -> None:
    """Pancreas: an elongated, lobulated body crossing the midline, head (low) to tail (high, left)."""
    rng, t = A.rng, A.t
    t0, t1 = 0.2 + rng.uniform(-0.04, 0.04), 0.82 + rng.uniform(-0.04, 0.04)
    s = np.clip((t - t0) / (t1 - t0), 0, 1)
    present = (t >= t0) & (t <= t1)
    pts = np.array([A.frac_to_uv(*p) for p in ((0.44, 0.61), (0.52, 0.645), (0.63, 0.635), (0.74, 0.56))])
    pts += rng.normal(0, 0.015, pts.shape)
    cu, cv, ang = along_path(pts, s)
    prof = np.where(present, 0.85 + 0.3 * np.sin(math.pi * s), 0.0)
    r1, r2 = k.radii(0.0062, 2.4, prof, present)
    q, sl = A.blob(cu, cv, r1 * prof, r2 * prof, ang, present=present, harmonics=A.random_harmonics(0.06))
    A.paint(PANCREAS, q < 1, sl, k.hu_jit(90, 5) + A.tex(sl, 3, 9))


def _gallbladder(A: Anatomy, k: _Placement) -> None:
    """Gallbladder: pear in the liver's fossa, lower-middle slices."""
    rng, t = A.rng, A.t
    t0 = 0.08 + rng.uniform(-0.04, 0.04)
    prof = z_profile(t, t0, t0 + 0.47 + rng.uniform(-0.04, 0.04), 0.5)
    cu, cv = k.jitter(0.33, 0.70)
    r1, r2 = k.radii(0.013, 1.5, prof)
    q, sl = A.blob(cu, cv, r1 * prof, r2 * prof, rng.uniform(0.4, 1.2), harmonics=A.random_harmonics(0.05))
    A.paint(GALLBLADDER, q < 1, sl, np.where(q > 0.85, k.hu_jit(35, 4), k.hu_jit(10, 4)))


def _portal_vein(A: Anatomy, k: _Placement) -> None:
    """Portal vein (oblique: confluence low -> liver hilum high) and splenic vein (along the
    pancreas's back toward the spleen) -- one label."""
    rng, t = A.rng, A.t
    t0, t1 = 0.24 + rng.uniform(-0.04, 0.04), 0.86 + rng.uniform(-0.04, 0.04)
    present = (t >= t0) & (t <= t1)
    s = np.clip((t - t0) / (t1 - t0), 0, 1)
    pv_hu = k.hu_jit(170, 8)
    pts = np.array([A.frac_to_uv(*p) for p in ((0.55, 0.60), (0.49, 0.63), (0.43, 0.65))])
    cu, cv, ang = along_path(pts, s)
    r = math.sqrt(0.0035 * k.body_area / math.pi) * rng.uniform(0.9, 1.1)
    q, sl = A.blob(cu, cv, r * 1.35, r, ang, present=present, harmonics=A.random_harmonics(0.03))
    vein = np.zeros(A.shape, bool)
    vein[sl] = q < 1
    ts0, ts1 = t0 + 0.22, t1 - 0.05
    present_s = (t >= ts0) & (t <= ts1)
    ss = np.clip((t - ts0) / max(ts1 - ts0, 1e-3), 0, 1)
    pts = np.array([A.frac_to_uv(*p) for p in ((0.55, 0.59), (0.64, 0.585), (0.74, 0.515))])
    pts += rng.normal(0, 0.01, pts.shape)
    cu, cv, ang = along_path(pts, ss)
    r2 = math.sqrt(0.0008 * k.body_area / math.pi) * rng.uniform(0.9, 1.1)
    q, sl = A.blob(cu, cv, r2 * 4.5, r2, ang, present=present_s)
    vein[sl] |= q < 1
    A.paint(PORTAL_VEIN, vein, (slice(None), slice(None)), pv_hu + A.tex((slice(None), slice(None)), 3))


def _ivc_and_aorta(A: Anatomy, k: _Placement) -> tuple[float, float]:
    """IVC (flattened oval) and aorta (round), on every slice. Returns the aorta's centre (u, v)."""
    rng, t = A.rng, A.t
    cu, cv = k.jitter(0.47, 0.56, 0.008)
    prof = 1 + smooth_1d(rng, t, 0.05)
    r1, r2 = k.radii(0.0062, 1.35, prof)
    q, sl = A.blob(cu + 0.01 * smooth_1d(rng, t, 1), cv, r1 * prof, r2 * prof, rng.normal(0.3, 0.2), harmonics=A.random_harmonics(0.04))
    A.paint(IVC, q < 1, sl, k.hu_jit(135, 6) + A.tex(sl, 3))
    cu, cv = k.jitter(0.55, 0.50, 0.008)
    prof = 1 + smooth_1d(rng, t, 0.03)
    r1, r2 = k.radii(0.0042, 1.05, prof)
    q, sl = A.blob(cu + 0.01 * smooth_1d(rng, t, 1), cv, r1 * prof, r2 * prof, rng.uniform(0, 3))
    A.paint(AORTA, q < 1, sl, k.hu_jit(180, 7) + A.tex(sl, 2))
    return cu, cv


def _esophagus(A: Anatomy, k: _Placement, aorta: tuple[float, float]) -> None:
    """Esophagus: anterior-left of the aorta (centre ``aorta``, body units), upper slices only,
    sometimes with a little air."""
    rng, t = A.rng, A.t
    cu, cv = aorta
    t0 = 0.64 + rng.uniform(-0.04, 0.04)
    prof = np.clip((t - t0) / 0.08, 0, 1) ** 0.5
    present = t >= t0
    ecu, ecv = cu + 0.07 + 0.03 * (1 - t), cv + 0.1
    r1, r2 = k.radii(0.0045, 1.3, prof, present)
    q, sl = A.blob(ecu, ecv, r1 * prof, r2 * prof, rng.uniform(0, 3), present=present, harmonics=A.random_harmonics(0.05))
    air = q < (0.25 if rng.random() < 0.3 else 0.0)
    A.paint(ESOPHAGUS, q < 1, sl, np.where(air, -900.0, k.hu_jit(45, 5)))


def _adrenals(A: Anatomy, k: _Placement) -> None:
    """Adrenal glands: thin limbs above the kidneys, medial to them."""
    rng, t = A.rng, A.t
    for lab, (fx, fy), (t0, t1), ang0 in (
        (R_ADRENAL, (0.42, 0.48), (0.54, 1.0), 1.9),
        (L_ADRENAL, (0.63, 0.50), (0.52, 0.98), 1.25),
    ):
        shift = rng.uniform(-0.03, 0.03)
        prof = z_profile(t, t0 + shift, t1 + shift, 0.3)
        cu, cv = k.jitter(fx, fy, 0.008)
        r1, r2 = k.radii(0.0016, 1.9, prof)
        q, sl = A.blob(cu, cv, r1 * prof, r2 * np.maximum(prof, 0.6), ang0 + rng.normal(0, 0.15), deform=False)
        A.paint(lab, q < 1, sl, k.hu_jit(55, 5))
