"""What a phantom volume is made of: its config and affine, the body-unit coordinates, and the shapes
(deformed ellipses, smooth random profiles, paths) every layer is drawn with.

Internally the generator works in *body units*: ``u`` points to the patient's left, ``v`` to
anterior, both in millimetres divided by ``L = sqrt(Ax * By)`` where ``Ax``, ``By`` are the body's
half-width and half-depth, so that a shape's area in (u, v) divided by the body's area is its share
of the body cross-section, whatever the array shape or spacing. Everything therefore scales with
``PhantomConfig.shape``.

Every random number comes from the volume's one generator, ``Anatomy.rng``, in a fixed order: moving
a draw changes every volume after it (and the phantom's files), so the layers draw in the order
:func:`utils.data.phantom.volume.make_volume` calls them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# The 30 labelled BTCV training cases (Synapse RawData/Training): img0001-img0010, img0021-img0040.
PHANTOM_CASE_IDS: tuple[int, ...] = tuple(range(1, 11)) + tuple(range(21, 41))

HU_MIN, HU_MAX = -1024, 3071

# Label values (BTCV order, see utils/core/organs.py).
SPLEEN, R_KIDNEY, L_KIDNEY, GALLBLADDER, ESOPHAGUS, LIVER, STOMACH = 1, 2, 3, 4, 5, 6, 7
AORTA, IVC, PORTAL_VEIN, PANCREAS, R_ADRENAL, L_ADRENAL = 8, 9, 10, 11, 12, 13

# The cranio-caudal stack, in *band units*: 0..1 is the organ band the default stack covers (from the
# kidneys' middle to the adrenals' tops; the suite's stores give it BAND_MM). ABDOMEN_EXTENT is a whole
# upper abdomen, ~250 mm from below the kidneys' lower poles to above the liver dome: there every organ
# but the aorta, the IVC and the esophagus (it leaves through the top) begins and ends inside the stack
# (the 3-D stage's dense volumes).
BAND_MM = 90.0
BAND_EXTENT: tuple[float, float] = (0.0, 1.0)
ABDOMEN_EXTENT: tuple[float, float] = (-0.75, 2.0)
EXTENTS = {"band": BAND_EXTENT, "abdomen": ABDOMEN_EXTENT}


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate.

    shape: (x, y, z) voxels of every volume (RAS+ order: x toward patient's right, y anterior,
        z superior). The body fills about 0.75 of the field in x and 0.58 in y whatever the shape.
    spacing: (x, y, z) voxel size in mm.
    seed: global seed; volume ``case_id`` is drawn from ``np.random.default_rng([seed, case_id])``.
    n_volumes: how many of :data:`PHANTOM_CASE_IDS` (the first ones) ``write_phantom_dataset`` writes.
    cases: explicit case ids to write instead (each one of :data:`PHANTOM_CASE_IDS`); empty = the
        first ``n_volumes``. E.g. ``(35,)``: one validation volume (BTCV's validation cases are 35-40).
    extent: (inferior, superior) end of the stack in band units (:data:`BAND_EXTENT`, the default, or
        :data:`ABDOMEN_EXTENT`); it must hold the band. Slices inside the band are drawn exactly as in
        the band-only stack (same shapes at the same band position); outside it the organs that run
        through the band end in tapered caps.
    """

    shape: tuple[int, int, int] = (160, 160, 16)
    spacing: tuple[float, float, float] = (2.4, 2.4, 6.0)
    seed: int = 0
    n_volumes: int = 30
    cases: tuple[int, ...] = ()
    extent: tuple[float, float] = BAND_EXTENT

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        if len(shape) != 3 or min(shape[:2]) < 16 or shape[2] < 2:
            raise ValueError(f"shape must be (x, y, z) with x, y >= 16 and z >= 2, got {self.shape}")
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive mm values, got {self.spacing}")
        if not 1 <= int(self.n_volumes) <= len(PHANTOM_CASE_IDS):
            raise ValueError(f"n_volumes must be 1..{len(PHANTOM_CASE_IDS)}, got {self.n_volumes}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "n_volumes", int(self.n_volumes))
        cases = tuple(int(c) for c in self.cases)
        unknown = sorted(set(cases) - set(PHANTOM_CASE_IDS))
        if unknown or len(set(cases)) != len(cases):
            raise ValueError(f"cases must be distinct phantom case ids (1-10, 21-40), got {self.cases}")
        object.__setattr__(self, "cases", cases)
        extent = tuple(float(e) for e in self.extent)
        if len(extent) != 2 or not extent[0] <= 0.0 < 1.0 <= extent[1]:
            raise ValueError(f"extent must be (inferior, superior) band units holding the band 0..1, got {self.extent}")
        object.__setattr__(self, "extent", extent)

    @property
    def case_ids(self) -> tuple[int, ...]:
        """The BTCV case ids this config's dataset holds: ``cases``, or the first ``n_volumes`` phantom ids."""
        return tuple(sorted(self.cases)) if self.cases else PHANTOM_CASE_IDS[: self.n_volumes]


def phantom_affine(config: PhantomConfig) -> np.ndarray:
    """4x4 float64 voxel-to-world (RAS+, mm) affine: diag(spacing) with the volume centred on 0."""
    spacing = np.asarray(config.spacing, np.float64)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(config.shape, np.float64) - 1.0) / 2.0 * spacing
    return affine


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[int, int, int]) -> np.ndarray:
    """Low-frequency noise of ``shape`` (float32, about zero mean and unit std): a ``cells`` grid of
    Gaussian values, upsampled bicubically in-plane and linearly along z."""
    X, Y, Z = shape
    cx, cy, cz = cells
    coarse = rng.standard_normal((cx, cy, cz)).astype(np.float32)
    up = cv2.resize(coarse, (Y, X), interpolation=cv2.INTER_CUBIC).reshape(X, Y, cz)
    pos = np.clip((np.arange(Z) + 0.5) / Z * cz - 0.5, 0, cz - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, cz - 1)
    w = (pos - lo).astype(np.float32)
    weights = np.zeros((cz, Z), np.float32)
    weights[lo, np.arange(Z)] += 1 - w
    weights[hi, np.arange(Z)] += w
    out = (up.reshape(-1, cz) @ weights).reshape(X, Y, Z)
    return out / max(float(out.std()), 1e-6)


def smooth_1d(rng: np.random.Generator, t: np.ndarray, amp: float, n_terms: int = 2) -> np.ndarray:
    """A smooth random function of t in [0, 1] (sum of low-frequency sines) with amplitude ~amp."""
    out = np.zeros_like(t)
    for k in range(1, n_terms + 1):
        out += rng.normal(0, amp / k) * np.sin(math.pi * k * t + rng.uniform(0, 2 * math.pi))
    return out


def z_profile(t: np.ndarray, t0: float, t1: float, power: float = 0.5) -> np.ndarray:
    """Radius scale along z of an organ spanning t0..t1 (fractions of the stack, 0 = inferior):
    an ellipsoid-like cap ``(1 - d^2)^power``, 0 outside."""
    centre, half = (t0 + t1) / 2, (t1 - t0) / 2
    d = (t - centre) / half
    return np.clip(1 - d * d, 0, None) ** power


def band_ends(t: np.ndarray, lower: float, upper: float, power: float = 0.5) -> np.ndarray:
    """Radius scale of an organ that runs through the whole band: exactly 1 on the band (0 <= t <= 1),
    so a band-only stack is unchanged, and an ellipsoid-like cap outside it that reaches 0 at ``lower``
    (< 0) below and ``upper`` (> 1) above: where the organ ends in a longer stack."""
    d = np.where(t < 0, t / lower, np.where(t > 1, (t - 1) / (upper - 1), 0.0))
    return np.clip(1 - d * d, 0, None) ** power



def along_path(pts: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point and tangent angle at positions s in [0, 1] along a polyline (P, 2), smoothed
    (quadratic B-spline-like corner cutting)."""
    fine = np.linspace(0, 1, 64)
    seg = np.linspace(0, 1, len(pts))
    pu = np.interp(fine, seg, pts[:, 0])
    pv = np.interp(fine, seg, pts[:, 1])
    k = np.ones(9) / 9
    pu = np.convolve(np.pad(pu, 4, mode="edge"), k, mode="valid")
    pv = np.convolve(np.pad(pv, 4, mode="edge"), k, mode="valid")
    cu = np.interp(s, fine, pu)
    cv = np.interp(s, fine, pv)
    du, dv = np.gradient(pu), np.gradient(pv)
    ang = np.arctan2(np.interp(s, fine, dv), np.interp(s, fine, du))
    return cu, cv, ang



class Anatomy:
    """One volume under construction: coordinate grids, masks, label and HU arrays."""

    def __init__(self, case_id: int, config: PhantomConfig) -> None:
        self.rng = rng = np.random.default_rng([config.seed, case_id])
        self.shape = X, Y, Z = config.shape
        sx, sy, sz = config.spacing
        self.spacing = config.spacing
        low, high = config.extent
        # Band position of every slice: 0..1 across the default stack (0 = most inferior slice).
        self.t = low + (high - low) * ((np.arange(Z) + 0.5) / Z)
        self.in_band = (self.t >= 0) & (self.t <= 1)
        self.z_mm = np.arange(Z) * sz

        # Body size (+-8 %) and placement: about 0.75 of the field wide and 0.58 deep.
        ax_mm = 0.375 * X * sx * rng.uniform(0.92, 1.08)
        by_mm = 0.29 * Y * sy * rng.uniform(0.92, 1.08)
        self.L = L = math.sqrt(ax_mm * by_mm)  # mm per body unit
        self.a, self.b = ax_mm / L, by_mm / L  # body half-width / half-depth in body units
        ci = (X - 1) / 2 + rng.normal(0, 0.01) * X
        cj = (Y - 1) / 2 + 0.03 * Y + rng.normal(0, 0.01) * Y
        self.ci, self.cj = ci, cj
        self.rot = math.radians(rng.normal(0, 2.5))  # patient slightly rotated on the table

        ii, jj = np.meshgrid(np.arange(X, dtype=np.float32), np.arange(Y, dtype=np.float32), indexing="ij")
        u0 = -(ii - ci) * sx / L  # toward patient's left (RAS axis 0 points to the right)
        v0 = (jj - cj) * sy / L  # toward anterior
        c, s = math.cos(self.rot), math.sin(self.rot)
        self.u_table, self.v_table = u0, v0
        self.u2 = (c * u0 - s * v0).astype(np.float32)  # 2-D (X, Y), rotated with the patient
        self.v2 = (s * u0 + c * v0).astype(np.float32)

        # Smooth random deformation of the organs (body units; ~3-4 mm at default size).
        amp = 0.028
        self.U = self.u2[..., None] + amp * smooth_noise(rng, self.shape, (5, 5, 3))
        self.V = self.v2[..., None] + amp * smooth_noise(rng, self.shape, (5, 5, 3))

        self.texture = smooth_noise(rng, self.shape, (9, 9, 4))  # coarse organ texture
        self.fine = smooth_noise(rng, self.shape, (24, 24, Z))  # lobulation / mottling

        self.image = np.full(self.shape, -1000.0, np.float32)
        self.label = np.zeros(self.shape, np.uint8)
        self.forbidden = np.zeros(self.shape, bool)  # bone and muscle: organs never go there

    # -- coordinates --------------------------------------------------------------------------

    def frac_to_uv(self, fx: float, fy: float) -> tuple[float, float]:
        """Body bounding-box fractions (fx: 0 = patient's right .. 1 = left; fy: 0 = posterior ..
        1 = anterior) -> body units (u toward left, v toward anterior)."""
        return self.a * (2 * fx - 1), self.b * (2 * fy - 1)

    def uv_box(self, umin: float, umax: float, vmin: float, vmax: float) -> tuple[slice, slice]:
        """Array (x, y) slices covering a (u, v) rectangle (plus a margin for deformation)."""
        m = 0.1
        us = np.array([umin - m, umax + m, umin - m, umax + m])
        vs = np.array([vmin - m, vmin - m, vmax + m, vmax + m])
        c, s = math.cos(self.rot), math.sin(self.rot)
        u0, v0 = c * us + s * vs, -s * us + c * vs  # undo the rotation
        sx, sy, _ = self.spacing
        ii = self.ci - u0 * self.L / sx
        jj = self.cj + v0 * self.L / sy
        X, Y, _ = self.shape
        i0, i1 = int(max(0, math.floor(ii.min()))), int(min(X, math.ceil(ii.max()) + 1))
        j0, j1 = int(max(0, math.floor(jj.min()))), int(min(Y, math.ceil(jj.max()) + 1))
        return slice(i0, max(i0, i1)), slice(j0, max(j0, j1))

    # -- shapes ---------------------------------------------------------------------------------

    def blob(self, cu, cv, r1, r2, ang, present=None, harmonics=(), box=None, deform=True):
        """Normalised radius q (< 1 inside) of a deformed ellipse whose centre, radii and angle may
        vary along z (scalars or (Z,) arrays), evaluated on the (x, y) ``box`` (full grid if None).

        harmonics: (k, amplitude, phase) terms of a radial modulation 1 + sum a cos(k theta + phase).
        Returns (q, sl) where sl = (slice_x, slice_y) and q has shape of the box x Z; q is +inf on
        slices where ``present`` is False.
        """
        Z = self.shape[2]
        cu, cv, r1, r2, ang = (np.broadcast_to(np.asarray(p, np.float32), (Z,)) for p in (cu, cv, r1, r2, ang))
        if box is None:
            rmax = float(np.max(np.maximum(r1, r2))) * 1.4
            box = self.uv_box(float(cu.min()) - rmax, float(cu.max()) + rmax, float(cv.min()) - rmax, float(cv.max()) + rmax)
        sl = box
        if deform:
            U, V = self.U[sl], self.V[sl]
        else:
            U, V = self.u2[sl][..., None], self.v2[sl][..., None]
        du, dv = U - cu, V - cv
        c, s = np.cos(ang), np.sin(ang)
        r1s = np.maximum(r1, 1e-6)
        r2s = np.maximum(r2, 1e-6)
        a = (du * c + dv * s) / r1s
        b = (-du * s + dv * c) / r2s
        q = np.sqrt(a * a + b * b)
        if harmonics:
            theta = np.arctan2(b, a)
            mod = np.ones_like(q)
            for k, amp, phase in harmonics:
                mod += amp * np.cos(k * theta + phase)
            q = q / np.maximum(mod, 0.2)
        absent = (np.minimum(r1, r2) <= 1e-5)
        if present is not None:
            absent = absent | ~np.asarray(present, bool)
        if absent.any():
            q = np.broadcast_to(q, (*q.shape[:2], Z)).copy() if q.shape[2] != Z else q
            q[:, :, absent] = np.inf
        return q, sl

    def random_harmonics(self, amp: float, ks=(2, 3, 4)):
        rng = self.rng
        return [(k, rng.normal(0, amp / (1 + 0.3 * (k - 2))), rng.uniform(0, 2 * math.pi)) for k in ks]

    def paint(self, label: int, mask: np.ndarray, sl, hu) -> np.ndarray:
        """Give organ ``label`` the voxels of ``mask`` (box ``sl``) that are inside the abdominal
        cavity and not bone/muscle; later organs overwrite earlier ones. ``hu``: scalar or array of
        the box's shape. Returns the painted mask (box-shaped)."""
        mask = mask & self.cavity[sl] & ~self.forbidden[sl]
        self.label[sl][mask] = label
        hu_arr = np.broadcast_to(np.asarray(hu, np.float32), mask.shape)
        self.image[sl][mask] = hu_arr[mask]
        return mask

    def tex(self, sl, coarse: float, fine: float = 0.0) -> np.ndarray:
        out = coarse * self.texture[sl]
        if fine:
            out = out + fine * self.fine[sl]
        return out

