"""The tissues around the organs, drawn before them: skin, fat and the muscle wall, the CT table, bowel
loops and the colon, the spine and its muscles, and the ribs. Bone and muscle are marked ``forbidden``,
so no organ is painted over them.
"""
from __future__ import annotations

import math

import numpy as np

from utils.data.phantom.anatomy import Anatomy, smooth_1d, smooth_noise, z_profile


def draw_body(A: Anatomy) -> None:
    """Skin outline, subcutaneous fat, muscle wall, abdominal cavity and CT table."""
    rng = A.rng
    u, v = A.u2, A.v2
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    # Superellipse outline, flatter posteriorly (lying on the table), with a gentle wobble.
    wob = [(k, rng.normal(0, 0.012), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
    fat0 = rng.uniform(0.06, 0.12)
    fat_phase = rng.uniform(0, 2 * math.pi)
    mus0 = rng.uniform(0.045, 0.065)

    def outline(th):
        """Skin radius (body units) at polar angle th (0 = patient's left, pi/2 = anterior)."""
        th = np.asarray(th, np.float64)
        c, s = np.abs(np.cos(th)), np.abs(np.sin(th))
        p_v = np.where(np.sin(th) >= 0, 2.1, 3.0)
        lo, hi = np.zeros_like(th), np.full_like(th, max(A.a, A.b) * 1.01)
        for _ in range(20):  # solve (r c / a)^2.3 + (r s / b)^p_v = 1 by bisection
            mid = (lo + hi) / 2
            inside = (mid * c / A.a) ** 2.3 + (mid * s / A.b) ** p_v < 1
            lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
        return lo * (1 + sum(a * np.cos(k * th + ph) for k, a, ph in wob))

    def fat(th):
        # thicker anteriorly and laterally, thin posteriorly over the spine
        return fat0 * (1 + 0.35 * np.sin(th) + 0.15 * np.cos(2 * th)) * (1 + 0.15 * np.cos(3 * th + fat_phase))

    def muscle(th):
        return mus0 * (1 + 0.3 * np.abs(np.cos(th)))

    s_body = 1 + smooth_1d(rng, A.t, 0.012)  # body outline varies a little along z
    R = outline(theta).astype(np.float32)[..., None] * s_body.astype(np.float32)
    rho3 = rho[..., None]
    A.body = rho3 < R
    A.muscle_outer = rho3 < R - fat(theta).astype(np.float32)[..., None]
    A.cavity = rho3 < R - (fat(theta) + muscle(theta)).astype(np.float32)[..., None]
    A.outline, A.fat_t, A.muscle_t, A.s_body = outline, fat, muscle, s_body

    A.fat_hu = rng.uniform(-110, -90)
    A.muscle_hu = rng.uniform(45, 60)
    A.image[A.body] = A.fat_hu  # subcutaneous fat, and visceral fat inside the cavity
    A.image[A.muscle_outer & ~A.cavity] = A.muscle_hu
    A.image += np.where(A.body, 6 * A.fine, 0)
    _table(A)


def _table(A: Anatomy) -> None:
    """CT table: a curved band under the patient (not rotated with the patient), wherever the body is not."""
    v_t = -A.b * 1.02 - 0.02 + 0.05 * A.u_table**2 / A.a**2
    tu = np.abs(A.u_table) < 1.2 * A.a
    shell = 2.0 * max(A.spacing[:2]) / A.L  # about two pixels thick
    top = tu & (A.v_table < v_t) & (A.v_table > v_t - shell)
    core = tu & (A.v_table <= v_t - shell) & (A.v_table > v_t - shell - 0.07)
    bottom = tu & (A.v_table <= v_t - shell - 0.07) & (A.v_table > v_t - 2 * shell - 0.07)
    table_hu = np.where(core, -850.0, 300.0).astype(np.float32)
    A.table = (top | bottom | core)[..., None] & ~A.body
    A.image = np.where(A.table, table_hu[..., None], A.image)


def draw_viscera(A: Anatomy) -> None:
    """Visceral fat with bowel loops (fluid/soft tissue, some gas) and the colon: the low-contrast
    neighbourhood of the pancreas. Organs painted later overwrite it."""
    rng = A.rng
    cav = A.cavity
    bowel_field = smooth_noise(rng, A.shape, (11, 11, 5))
    V = A.V
    # Fewer loops in the retroperitoneum (around kidneys and great vessels) and high up.
    thr = 0.1 + 1.6 * np.clip(-(V + 0.05) / 0.25, 0, 1) + 0.6 * A.t
    bowel = cav & (bowel_field > thr)
    A.image[bowel] = rng.uniform(25, 40) + 8 * A.fine[bowel]
    gas_field = smooth_noise(rng, A.shape, (18, 18, 8))
    gas = bowel & (gas_field > 1.7)
    A.image[gas] = -900.0
    # Ascending (right) and descending (left) colon on the lower slices, with mottled stool/gas.
    for fx, fy, top in ((0.15, 0.47, 0.45), (0.86, 0.50, 0.55)):  # ascending, descending
        cu, cv = A.frac_to_uv(fx + rng.normal(0, 0.015), fy + rng.normal(0, 0.02))
        r = rng.uniform(0.08, 0.11) * z_profile(A.t, -0.6, top + rng.uniform(-0.05, 0.05), 0.3)
        q, sl = A.blob(cu, cv, r, r * 0.85, rng.uniform(0, 3), harmonics=A.random_harmonics(0.08))
        colon = (q < 1) & cav[sl]
        wall = colon & (q > 0.8)
        content = np.where(A.fine[sl] > rng.uniform(-0.5, 0.5), -850.0, 10.0)
        A.image[sl][colon] = content[colon]
        A.image[sl][wall] = 35.0


def draw_spine_and_ribs(A: Anatomy) -> None:
    """Vertebra (cancellous body with a bright cortical rim, canal, arch, spinous and transverse
    processes; discs every ~32 mm), paraspinal and psoas muscles, and ribs in the body wall."""
    rng = A.rng
    vb_u, vb_v = A.frac_to_uv(0.5, 0.36 + rng.normal(0, 0.01))
    vb_ru, vb_rv = 0.16 * rng.uniform(0.93, 1.07), 0.125 * rng.uniform(0.93, 1.07)
    period, disc_mm = rng.uniform(30, 35), rng.uniform(5, 7)
    disc = ((A.z_mm + rng.uniform(0, period)) % period) < disc_mm  # (Z,)
    _back_muscles(A, vb_v, vb_ru)
    bone_cort = rng.uniform(700, 950)
    bone_canc = rng.uniform(220, 330)
    _vertebra(A, (vb_u, vb_v, vb_ru, vb_rv), disc, period, bone_cort, bone_canc)
    _ribs(A, bone_cort, bone_canc)


def _back_muscles(A: Anatomy, vb_v: float, vb_ru: float) -> None:
    """Paraspinal muscles behind the vertebra, then psoas beside it (grows toward the pelvis): forbidden to organs."""
    muscle_hu = A.muscle_hu
    for sgn in (-1, 1):
        q, sl = A.blob(sgn * 0.17, vb_v - 0.36, 0.15, 0.15, sgn * 0.3, deform=False)
        m = q < 1
        A.image[sl][m & A.body[sl]] = muscle_hu + 3 * A.fine[sl][m & A.body[sl]]
        A.forbidden[sl] |= m & A.body[sl]
        r_ps = 0.025 + 0.075 * np.clip(1 - A.t, 0, None) ** 1.3  # none above the band
        q, sl = A.blob(sgn * (vb_ru + r_ps * 0.8), vb_v + 0.01, r_ps, r_ps * 1.1, 0.0, harmonics=[(2, 0.08, 0.0)])
        m = (q < 1) & A.cavity[sl]
        A.image[sl][m] = muscle_hu + 3 * A.fine[sl][m]
        A.forbidden[sl] |= m


def _vertebra(A: Anatomy, body: tuple[float, float, float, float], disc: np.ndarray, period: float,
              bone_cort: float, bone_canc: float) -> None:
    """Vertebral body ``(u, v, radius_u, radius_v)``: cancellous core, cortical rim, or a disc where ``disc`` (Z,)
    is set; the canal with the posterior arch around it; spinous and transverse processes (every ``period`` mm)."""
    vb_u, vb_v, vb_ru, vb_rv = body
    # Vertebral body: cancellous core, cortical rim, or disc.
    q, sl = A.blob(vb_u, vb_v, vb_ru, vb_rv, 0.0, harmonics=[(2, 0.04, 0.0), (3, 0.03, 1.0)], deform=False)
    m = q < 1
    hu = np.where(q > 0.85, bone_cort, bone_canc + 40 * A.fine[sl])
    hu = np.where(disc[None, None, :], 90.0 + 5 * A.fine[sl], hu)
    A.image[sl][m] = hu[m]
    A.forbidden[sl] |= m
    # Canal with the posterior arch around it; spinous and transverse processes.
    canal_v = vb_v - vb_rv - 0.06
    q, sl = A.blob(0.0, canal_v, 0.105, 0.1, 0.0, deform=False)
    arch = (q < 1) & (A.v2[sl][..., None] < canal_v + 0.05)
    A.image[sl][arch] = bone_cort * 0.9
    A.forbidden[sl] |= arch
    q, sl = A.blob(0.0, canal_v - 0.18, 0.03, 0.17, 0.0, deform=False)
    m = (q < 1) & A.body[sl]
    A.image[sl][m] = bone_cort * 0.85
    A.forbidden[sl] |= m
    for sgn in (-1, 1):
        q, sl = A.blob(sgn * 0.2, canal_v + 0.02, 0.11, 0.03, sgn * 0.25, deform=False)
        m = (q < 1) & ~disc[None, None, :] & (((A.z_mm + 11) % period) < period * 0.45)[None, None, :]
        A.image[sl][m] = bone_cort * 0.85
        A.forbidden[sl] |= m
    q, sl = A.blob(0.0, canal_v, 0.06, 0.055, 0.0, deform=False)
    m = q < 1
    A.image[sl][m] = 15.0
    A.forbidden[sl] |= m


def _ribs(A: Anatomy, bone_cort: float, bone_canc: float) -> None:
    """Cross-sections of oblique bony arcs inside the body wall, more of them higher up."""
    rng = A.rng
    Z = A.shape[2]
    spacing_deg = rng.uniform(24, 30)
    slope = rng.uniform(0.25, 0.45)  # degrees of arc per mm along z
    u2, v2 = A.u2, A.v2
    for side in (-1, 1):  # -1: patient's right (u < 0), +1: patient's left
        phase = rng.uniform(0, spacing_deg)
        for k in range(Z):
            post, ant = -60.0, 15.0 + 45.0 * A.t[k]  # allowed arc (degrees; 0 = lateral, 90 = anterior)
            base = phase + slope * A.z_mm[k]
            for n in range(-8, 9):
                ang_deg = base + n * spacing_deg
                if not post <= ang_deg <= ant:
                    continue
                phi = math.radians(ang_deg)
                th = phi if side > 0 else math.pi - phi  # polar angle of the rib around the body
                r_mid = float(A.outline(th)) * A.s_body[k] - float(A.fat_t(th)) - 0.6 * float(A.muscle_t(th))
                ru, rv = r_mid * math.cos(th), r_mid * math.sin(th)
                sl = A.uv_box(ru - 0.05, ru + 0.05, rv - 0.05, rv + 0.05)
                du, dv = u2[sl] - ru, v2[sl] - rv
                ct, st = -math.sin(th), math.cos(th)  # tangent direction
                qa = (du * ct + dv * st) / 0.055
                qb = (-du * st + dv * ct) / 0.032
                q = np.sqrt(qa * qa + qb * qb)
                m = q < 1
                hu = np.where(q > 0.6, bone_cort * 0.95, bone_canc)
                A.image[sl][..., k][m] = hu[m]
                A.forbidden[sl][..., k][m] = True
