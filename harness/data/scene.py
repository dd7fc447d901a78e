"""Scene rendering: one stamp from a card's physics, deterministic per (seed, index).

Owns everything inside one image: deflector light, SIE/EPL + shear mass and the ray-shot clumpy source
(with arc-visibility redraws), lens-like hard negatives, neighbours and stars, the per-band PSF and the
sky + Poisson + read noise. Chunking, parallelism, measurement and writing sets live in `simulate`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.data import detector
from harness.data.psf import KSIZE, kernel_grid, psf_kernels

MAX_SOURCE_TRIES = 12  # redraws of a source that fails the card's arc-visibility cut


class Renderer:
    """Per-process state: pixel grid and lenstronomy models, built once and reused."""

    def __init__(self, data: dict) -> None:
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        self.d = data
        ins = data["instrument"]
        self.bands = list(ins["bands"])
        self.ps = float(ins["pixel_scale"])
        self.npix = int(ins["npix"])
        c = (np.arange(self.npix) - (self.npix - 1) / 2) * self.ps
        self.xx, self.yy = (a.ravel() for a in np.meshgrid(c, c))
        self.xg, self.yg = np.meshgrid(c, c)
        self.lens = {"SIE": LensModel(["SIE", "SHEAR"]), "EPL": LensModel(["EPL", "SHEAR"])}
        self.sersic = LightModel(["SERSIC_ELLIPSE"])
        self.gauss = LightModel(["GAUSSIAN"])
        self.fft = (self.npix + KSIZE - 1 + 7) // 8 * 8
        self.kx, self.ky = kernel_grid(self.ps)
        zp = float(ins["zeropoint"])
        bd = [ins["band"][b] for b in self.bands]
        # electrons per output flux unit, sky electrons per pixel, and read-noise variance per pixel
        self.e_per_flux = np.array([b["exptime"] * 10 ** (0.4 * (b["zeropoint_inst"] - zp)) for b in bd])
        self.sky_e = np.array([10 ** (-0.4 * (b["sky_mag"] - b["zeropoint_inst"])) * b["exptime"] * self.ps**2
                               for b in bd])
        self.rn_var = np.array([b["read_noise"] ** 2 * b["n_exposures"] for b in bd])
        self.gain = np.array([b["gain"] for b in bd])
        # 1-sigma noise per pixel in output flux units (sky-dominated), for the lensed-pixel count
        self.sigma_flux = np.sqrt(self.sky_e + self.rn_var) / self.e_per_flux
        self.zp = zp

    def warm_up(self) -> None:
        """Call each lenstronomy model once (first calls JIT-compile/cache); draws no random numbers."""
        for kind in self.lens:
            kw = {"theta_E": 1.0, "e1": 0.1, "e2": 0.0, "center_x": 0.0, "center_y": 0.0}
            if kind == "EPL":
                kw["gamma"] = 2.0
            self.lens[kind].ray_shooting(self.xx, self.yy, [kw, {"gamma1": 0.01, "gamma2": 0.0}])
        self._sersic_unit(self.xx, self.yy, {"R_sersic": 0.5, "n_sersic": 4.0, "e1": 0.0, "e2": 0.0,
                                             "center_x": 0.0, "center_y": 0.0})
        self._gauss_unit(self.xx, self.yy, 0.1, 0.0, 0.0)

    # ---- small helpers -------------------------------------------------------------------
    def _flux(self, mag_r: float, g_r: float, r_i: float) -> np.ndarray:
        """Per-band flux in output units from an r magnitude and two colours."""
        mags = {"g": mag_r + g_r, "r": mag_r, "i": mag_r - r_i}
        return np.array([10 ** (-0.4 * (mags.get(b, mag_r) - self.zp)) for b in self.bands])

    def _sersic_unit(self, x: np.ndarray, y: np.ndarray, kw: dict) -> np.ndarray:
        """Sersic surface brightness per pixel normalised to unit total (intrinsic) flux."""
        kw = dict(kw, amp=1.0)
        tot = float(self.sersic.total_flux([kw])[0])
        return self.sersic.surface_brightness(x, y, [kw]) * (self.ps**2 / tot)

    def _gauss_unit(self, x: np.ndarray, y: np.ndarray, sigma: float, cx: float, cy: float) -> np.ndarray:
        kw = {"amp": 1.0, "sigma": sigma, "center_x": cx, "center_y": cy}
        return self.gauss.surface_brightness(x, y, [kw]) * self.ps**2

    def _psf(self, fwhm: np.ndarray) -> np.ndarray:
        return psf_kernels(self.bands, self.d["instrument"]["band"], fwhm, self.kx, self.ky)

    def _convolve(self, img: np.ndarray, kf: np.ndarray) -> np.ndarray:
        """Linear (zero-padded) FFT convolution of (C, H, W) with precomputed kernel spectra."""
        s = (self.fft, self.fft)
        full = np.fft.irfft2(np.fft.rfft2(img, s=s) * kf, s=s)
        o = KSIZE // 2
        return full[:, o:o + self.npix, o:o + self.npix]

    @staticmethod
    def _e1e2(q: float, phi: float) -> tuple[float, float]:
        e = (1 - q) / (1 + q)
        return e * math.cos(2 * phi), e * math.sin(2 * phi)

    def _point(self, img: np.ndarray, x: float, y: float, flux: np.ndarray) -> None:
        """Add a point source (bilinear over 4 pixels) before PSF convolution."""
        fx = x / self.ps + (self.npix - 1) / 2
        fy = y / self.ps + (self.npix - 1) / 2
        j0, i0 = math.floor(fx), math.floor(fy)
        dx, dy = fx - j0, fy - i0
        for di, dj, w in ((0, 0, (1 - dx) * (1 - dy)), (0, 1, dx * (1 - dy)),
                          (1, 0, (1 - dx) * dy), (1, 1, dx * dy)):
            i, j = i0 + di, j0 + dj
            if 0 <= i < self.npix and 0 <= j < self.npix:
                img[:, i, j] += flux * w

    # ---- one image -------------------------------------------------------------------------
    def render(self, seed: int, index: int) -> tuple[np.ndarray, dict]:
        """One stamp (C, H, W) float32 and its truth row, from `SeedSequence([seed, index])` alone."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        d, pop, nui = self.d, self.d["population"], self.d["nuisances"]
        u = rng.uniform
        shape = (self.npix, self.npix)
        is_lens = bool(rng.random() < pop["lens_fraction"])

        fwhm = np.array([max(0.6 * d["instrument"]["band"][b]["fwhm"],
                             d["instrument"]["band"][b]["fwhm"] + d["instrument"]["band"][b]["fwhm_scatter"]
                             * rng.standard_normal()) for b in self.bands])
        kf = np.fft.rfft2(self._psf(fwhm), s=(self.fft, self.fft))

        # deflector light: red early-type Sersic
        ll = pop["lens_light"]
        cx, cy = u(-0.5, 0.5) * self.ps, u(-0.5, 0.5) * self.ps
        phi_l, q_l = u(0, math.pi), u(*ll["q"])
        e1, e2 = self._e1e2(q_l, phi_l)
        lens_mag = u(*ll["mag_r"])
        cs = ll["colour_scatter"]
        lens_flux = self._flux(lens_mag, ll["g_r"] + cs * rng.standard_normal(),
                               ll["r_i"] + cs * rng.standard_normal())
        kw = {"R_sersic": u(*ll["R_eff"]), "n_sersic": u(*ll["n_sersic"]),
              "e1": e1, "e2": e2, "center_x": cx, "center_y": cy}
        unit = self._sersic_unit(self.xx, self.yy, kw).reshape(shape)
        model = lens_flux[:, None, None] * unit[None]

        truth: dict[str, Any] = {"truth_is_lens": int(is_lens), "truth_theta_E": 0.0, "truth_n_lensed_pix": 0,
                                 "truth_source_mag": np.nan, "truth_magnification": np.nan,
                                 "truth_lens_mag": lens_mag, "truth_hard_negative": "",
                                 "truth_lens_model": "none"}
        if is_lens:
            arcs = self._lensed_source(rng, pop, cx, cy, phi_l, kf, truth)
            model = model + arcs
        else:
            model = model + self._hard_negative(rng, nui["hard_negatives"], pop, cx, cy, lens_mag, phi_l,
                                                truth)
        model = model + self._contaminants(rng, nui, truth)

        img = self._convolve(model, kf)
        # noise in electrons: Poisson on sky + signal, Gaussian read noise; then ADU, then calibrated,
        # sky-subtracted
        sig_e = np.clip(img, 0, None) * self.e_per_flux[:, None, None]
        sky = self.sky_e[:, None, None]
        counts = rng.poisson(sig_e + sky).astype(np.float64)
        counts += rng.standard_normal(counts.shape) * np.sqrt(self.rn_var)[:, None, None]
        # (the gain converts e- to ADU and back in calibration, so it cancels in calibrated units)
        out = (counts - sky) / self.e_per_flux[:, None, None]
        if "detector" in d["instrument"]:  # its own random stream: cards without it are unchanged
            out = detector.apply(out, d["instrument"]["detector"], self.sigma_flux,
                                 np.random.default_rng(np.random.SeedSequence([seed, index, 1])), truth)
        for b, f in zip(self.bands, fwhm):
            truth[f"truth_psf_fwhm_{b}"] = float(f)
        return out.astype(np.float32), truth

    def _lensed_source(self, rng: np.random.Generator, pop: dict, cx: float, cy: float, phi_l: float,
                       kf: np.ndarray, truth: dict) -> np.ndarray:
        """Ray-shoot once, then draw sources until one passes the card's arc-visibility cut."""
        u = rng.uniform
        te = pop["theta_E"]
        theta_e = float(np.clip(te["median"] * math.exp(te["sigma_ln"] * rng.standard_normal()),
                                *te["range"]))
        lm = pop["lens_model"]
        kind = "EPL" if rng.random() < lm["epl_fraction"] else "SIE"
        e1, e2 = self._e1e2(u(*lm["q"]), phi_l + 0.15 * rng.standard_normal())
        kw_mass = {"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": cx, "center_y": cy}
        if kind == "EPL":
            kw_mass["gamma"] = u(*lm["gamma"])
        g, ang = u(*lm["shear"]), u(0, math.pi)
        kw_shear = {"gamma1": g * math.cos(2 * ang), "gamma2": g * math.sin(2 * ang)}
        bx, by = self.lens[kind].ray_shooting(self.xx, self.yy, [kw_mass, kw_shear])

        src = pop["source"]
        best: tuple[int, np.ndarray, float, float] | None = None
        for _ in range(MAX_SOURCE_TRIES):
            r = src["beta_max"] * theta_e * math.sqrt(rng.random())
            a = u(0, 2 * math.pi)
            sx, sy = cx + r * math.cos(a), cy + r * math.sin(a)
            re = u(*src["R_eff"])
            e1s, e2s = self._e1e2(u(*src["q"]), u(0, math.pi))
            kw = {"R_sersic": re, "n_sersic": u(*src["n_sersic"]), "e1": e1s, "e2": e2s,
                  "center_x": sx, "center_y": sy}
            ncl = int(rng.integers(0, src["clumps"]["max"] + 1))
            ff = u(*src["clumps"]["flux_fraction"]) if ncl else 0.0
            unit = (1 - ff) * self._sersic_unit(bx, by, kw)
            if ncl:
                w = rng.dirichlet(np.ones(ncl))
                for k in range(ncl):
                    ox, oy = rng.normal(0, re, size=2)
                    unit = unit + ff * w[k] * self._gauss_unit(bx, by, u(*src["clumps"]["sigma"]),
                                                               sx + ox, sy + oy)
            mag = u(*src["mag_r"])
            cs = src["colour_scatter"]
            flux = self._flux(mag, src["g_r"] + cs * rng.standard_normal(),
                              src["r_i"] + cs * rng.standard_normal())
            arcs = flux[:, None, None] * unit.reshape(self.npix, self.npix)[None]
            seen = self._convolve(arcs, kf)
            npx = int((seen > self.sigma_flux[:, None, None]).any(axis=0).sum())
            mu = float(unit.sum())
            if best is None or npx > best[0]:
                best = (npx, arcs, mag, mu)
            if npx >= src["min_lensed_pix"]:
                break
        npx, arcs, mag, mu = best
        truth.update(truth_theta_E=theta_e, truth_n_lensed_pix=npx, truth_source_mag=mag,
                     truth_magnification=mu, truth_lens_model=kind)
        return arcs

    def _hard_negative(self, rng: np.random.Generator, frac: dict, pop: dict, cx: float, cy: float,
                       lens_mag: float, phi_l: float, truth: dict) -> np.ndarray:
        """Lens-like non-lenses: blue companion, tidal/spiral arc, ring galaxy (or nothing)."""
        u = rng.uniform
        x = rng.random()
        shape = (len(self.bands), self.npix, self.npix)
        src = pop["source"]
        if x < frac["blue_companion"]:
            truth["truth_hard_negative"] = "blue_companion"
            r, a = u(0.8, 2.5), u(0, 2 * math.pi)
            px, py = cx + r * math.cos(a), cy + r * math.sin(a)
            # half are stretched tangentially, like a single arc
            phi = a + math.pi / 2 if rng.random() < 0.5 else u(0, math.pi)
            e1, e2 = self._e1e2(u(0.3, 0.8), phi)
            unit = self._sersic_unit(self.xx, self.yy, {"R_sersic": u(0.1, 0.4), "n_sersic": u(0.5, 1.5),
                                                        "e1": e1, "e2": e2, "center_x": px, "center_y": py})
            mag = u(src["mag_r"][0] - 1.0, src["mag_r"][1] - 0.5)
            flux = self._flux(mag, src["g_r"] + 0.15 * rng.standard_normal(),
                              src["r_i"] + 0.1 * rng.standard_normal())
            return flux[:, None, None] * unit.reshape(shape[1:])[None]
        x -= frac["blue_companion"]
        dx, dy = self.xg - cx, self.yg - cy
        rr, ph = np.hypot(dx, dy), np.arctan2(dy, dx)
        if x < frac["tidal_spiral"]:
            spiral = rng.random() < 0.5
            truth["truth_hard_negative"] = "spiral" if spiral else "tidal"
            r0, width, phi0 = u(0.8, 2.0), u(0.12, 0.3), u(-math.pi, math.pi)
            pitch = u(0.15, 0.35) if spiral else u(-0.05, 0.05)
            span = u(0.8, 1.6)  # angular half-extent (rad) of each arm
            unit = np.zeros(shape[1:])
            for arm in (0.0, math.pi) if spiral else (0.0,):
                dphi = np.angle(np.exp(1j * (ph - phi0 - arm)))
                ridge = r0 * np.exp(pitch * dphi)
                unit += np.exp(-0.5 * ((rr - ridge) / width) ** 2 - 0.5 * (dphi / span) ** 2)
            unit /= unit.sum()
            mag = lens_mag + u(1.0, 2.5)
            g_r = u(0.4, 0.8) if spiral else u(1.0, 1.4)
            flux = self._flux(mag, g_r, u(0.2, 0.5))
            return flux[:, None, None] * unit[None]
        x -= frac["tidal_spiral"]
        if x < frac["ring"]:
            truth["truth_hard_negative"] = "ring"
            q = u(0.6, 1.0)
            c, s = math.cos(phi_l), math.sin(phi_l)
            xr, yr = c * dx + s * dy, -s * dx + c * dy
            re = np.hypot(xr, yr / q)
            r0, width = u(1.0, 2.5), u(0.1, 0.3)
            knots = 1 + 0.6 * np.clip(np.sin(int(rng.integers(3, 8)) * ph + u(0, 2 * math.pi)), 0, None)
            unit = np.exp(-0.5 * ((re - r0) / width) ** 2) * knots
            unit /= unit.sum()
            flux = self._flux(lens_mag + u(0.8, 2.0), u(0.3, 0.7), u(0.1, 0.4))
            return flux[:, None, None] * unit[None]
        return np.zeros(shape)

    def _contaminants(self, rng: np.random.Generator, nui: dict, truth: dict) -> np.ndarray:
        """Neighbour galaxies and stars anywhere in the stamp, for lenses and non-lenses alike."""
        u = rng.uniform
        half = self.npix * self.ps / 2
        img = np.zeros((len(self.bands), self.npix, self.npix))
        n_gal = int(rng.poisson(nui["neighbours"]["rate"]))
        for _ in range(n_gal):
            mag = u(*nui["neighbours"]["mag_r"])
            re = 0.7 * 10 ** (-0.12 * (mag - 20)) * u(0.5, 1.5)  # fainter galaxies are smaller
            e1, e2 = self._e1e2(u(0.3, 1.0), u(0, math.pi))
            kw = {"R_sersic": re, "n_sersic": u(0.7, 4.0), "e1": e1, "e2": e2,
                  "center_x": u(-half, half), "center_y": u(-half, half)}
            unit = self._sersic_unit(self.xx, self.yy, kw)
            red = rng.random()
            flux = self._flux(mag, 0.3 + 1.2 * red + 0.1 * rng.standard_normal(), 0.1 + 0.45 * red)
            img += flux[:, None, None] * unit.reshape(self.npix, self.npix)[None]
        n_star = int(rng.poisson(nui["stars"]["rate"]))
        for _ in range(n_star):
            g_r = u(0.3, 1.5)
            self._point(img, u(-half, half), u(-half, half),
                        self._flux(u(*nui["stars"]["mag_r"]), g_r, 0.4 * g_r))
        truth.update(truth_n_neighbours=n_gal, truth_n_stars=n_star)
        return img
