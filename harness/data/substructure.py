"""Substructure scenes (DeepLense Common Test I): one single-band galaxy-galaxy lens whose main halo
carries no substructure, CDM point-mass subhalos (`sphere`) or a superfluid vortex (`vort`).

In the manner of DeepLenseSim (Alexander et al. 2020, arXiv 1909.07346; 2008.12731; the lenstronomy
Models I/II), with three corrections a referee would ask for, each named in `datasets/cards/README.md`:
Einstein radii use angular-diameter distances (DeepLenseSim uses luminosity distances); the number of
subhalos is the Poisson draw it computes but never uses; and Model II gets the Euclid noise its code
leaves out. Every draw comes from `SeedSequence([seed, index])`, so a stamp depends on nothing else.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

CLASSES = ("no", "sphere", "vort")     # sorted, as the deeplense-npy importer numbers class folders


@functools.cache
def point_mass_theta_e_unit(z_lens: float, z_source: float) -> float:
    """Einstein radius (arcsec) of a 1 M_sun point mass: theta_E = sqrt(4GM/c^2 D_ls/(D_l D_s)),
    angular-diameter distances in flat LCDM with H0 = 70, Om0 = 0.3 (DeepLenseSim's cosmology)."""
    from astropy import constants as const
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05)
    d_l, d_s = cosmo.angular_diameter_distance(z_lens), cosmo.angular_diameter_distance(z_source)
    d_ls = cosmo.angular_diameter_distance(z_lens, z_source)
    theta = np.sqrt(4 * const.G * const.M_sun / const.c**2 * d_ls / (d_l * d_s)).decompose().value
    return float(theta * 180 / math.pi * 3600)


def power_law_masses(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """n masses from dN/dm ∝ m^slope on [lo, hi] by inverting the CDF (log-uniform at slope -1)."""
    a = slope + 1.0
    u = rng.uniform(size=n)
    if abs(a) < 1e-9:
        return lo * (hi / lo) ** u
    return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)


def vortex_half_length(log10_axion_ev: float) -> float:
    """Half-length (arcsec) of the vortex line: the axion's de Broglie scale at the lens, DeepLenseSim's
    0.03" x (1e-22 eV / m_a), so 0.03" at 1e-22 eV and 3" at 1e-24 eV."""
    return 0.03 * 10 ** (-22.0 - log10_axion_ev)


def survey_band(ins: dict) -> Any:
    """lenstronomy's survey configuration for a magnitude-calibrated card (sky, read and shot noise),
    with the card's pixel scale and PSF; None for the Model I `gaussian-poisson` noise.

    `euclid-vis`: Euclid VIS with `coadd_years` of the survey (DeepLenseSim Model II);
    `hst-wfc3-f160w`: HST WFC3/F160W, one 5,400 s visit (DeepLenseSim Model III: "HST observation
    characteristics as done by default in lenstronomy")."""
    from lenstronomy.SimulationAPI.observation_api import SingleBand

    if ins["noise"] == "euclid-vis":
        from lenstronomy.SimulationAPI.ObservationConfig.Euclid import Euclid

        kw = Euclid(band="VIS", psf_type="GAUSSIAN", coadd_years=int(ins["coadd_years"])).kwargs_single_band()
    elif ins["noise"] == "hst-wfc3-f160w":
        from lenstronomy.SimulationAPI.ObservationConfig.HST import HST

        kw = HST(band="WFC3_F160W", psf_type="GAUSSIAN").kwargs_single_band()
    else:
        return None
    kw.update(pixel_scale=float(ins["pixel_scale"]), seeing=float(ins["psf_fwhm"]))
    return SingleBand(**kw)


class SubstructureRenderer:
    """Per-process state for one substructure card: pixel grid, lenstronomy models, noise model."""

    measures = False      # no catalog observables: the task is image-only, as in DeepLense
    label_column = "truth_class"

    def __init__(self, data: dict) -> None:
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LensModel.Profiles.point_mass import PointMass
        from lenstronomy.LightModel.light_model import LightModel

        self.d = data
        ins = data["instrument"]
        self.bands = list(ins["bands"])
        self.ps, self.npix = float(ins["pixel_scale"]), int(ins["npix"])
        c = (np.arange(self.npix) - (self.npix - 1) / 2) * self.ps
        xg, yg = np.meshgrid(c, c)
        self.xx, self.yy = xg.ravel(), yg.ravel()
        self.main = LensModel(["SIE", "SHEAR"])
        self.point = PointMass()
        self.source = LightModel(["SERSIC_ELLIPSE"])
        pop = data["population"]
        self.theta_unit = point_mass_theta_e_unit(float(pop["z_lens"]), float(pop["z_source"]))
        self.theta_main = self.theta_unit * math.sqrt(float(pop["halo_mass"]))
        self.band = survey_band(ins)

    def warm_up(self) -> None:
        """Nothing to compile: lenstronomy's SIE, shear and Sersic profiles are plain numpy here."""

    def _deflect(self, rng: np.random.Generator, cls: str, truth: dict) -> tuple[np.ndarray, np.ndarray]:
        """Source-plane positions of every pixel: SIE + shear, plus the class's point masses."""
        pop, sub = self.d["population"], self.d["substructure"]
        q = rng.uniform(*pop["lens"]["q"])
        phi, e = rng.uniform(0, math.pi), (1 - q) / (1 + q)
        g, gphi = rng.uniform(*pop["lens"]["shear"]), rng.uniform(0, math.pi)
        kw = [{"theta_E": self.theta_main, "e1": e * math.cos(2 * phi), "e2": e * math.sin(2 * phi),
               "center_x": 0.0, "center_y": 0.0},
              {"gamma1": g * math.cos(2 * gphi), "gamma2": g * math.sin(2 * gphi)}]
        bx, by = self.main.ray_shooting(self.xx, self.yy, kw)
        masses, xs, ys = np.zeros(0), np.zeros(0), np.zeros(0)
        if cls == "sphere":
            s = sub["sphere"]
            n = int(rng.poisson(float(s["n_mean"])))
            masses = power_law_masses(rng, n, *map(float, s["mass_range"]), float(s["slope"]))
            r, th = rng.uniform(*s["radius"], size=n), rng.uniform(0, 2 * math.pi, size=n)
            xs, ys = r * np.cos(th), r * np.sin(th)
        elif cls == "vort":
            v = sub["vort"]
            log_m = rng.uniform(*v["log10_axion_ev"])
            half, ang = vortex_half_length(log_m), rng.uniform(0, 2 * math.pi)
            t = np.linspace(-half, half, int(v["n_points"]))
            xs, ys = t * math.cos(ang), t * math.sin(ang)
            masses = np.full(t.size, float(v["mass"]) / t.size)
            truth["truth_log10_axion_ev"] = log_m
        if masses.size:   # every point mass at once: (masses, pixels) deflections, summed
            col = lambda a: np.asarray(a, float)[:, None]
            fx, fy = self.point.derivatives(self.xx[None], self.yy[None],
                                            col(self.theta_unit * np.sqrt(masses)), col(xs), col(ys))
            bx, by = bx - fx.sum(0), by - fy.sum(0)
        truth.update(truth_n_sub=int(masses.size), truth_sub_mass=float(masses.sum()))
        return bx, by

    def render(self, seed: int, index: int) -> tuple[np.ndarray, dict]:
        """One stamp (1, H, W) float32 and its truth row, from `SeedSequence([seed, index])` alone."""
        from scipy.ndimage import gaussian_filter

        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        pop, ins = self.d["population"], self.d["instrument"]
        k = int(rng.choice(len(CLASSES), p=np.asarray(pop["class_fractions"], float)))
        truth: dict[str, Any] = {"truth_class": k, "truth_theta_E": self.theta_main,
                                 "truth_log10_axion_ev": float("nan")}
        bx, by = self._deflect(rng, CLASSES[k], truth)
        s = pop["source"]
        q, phi = rng.uniform(*s["q"]), rng.uniform(0, math.pi)
        e = (1 - q) / (1 + q)
        cx, cy = rng.uniform(-s["offset"], s["offset"], size=2)
        kw = {"amp": 1.0, "R_sersic": rng.uniform(*s["R_sersic"]), "n_sersic": rng.uniform(*s["n_sersic"]),
              "e1": e * math.cos(2 * phi), "e2": e * math.sin(2 * phi), "center_x": cx, "center_y": cy}
        sb = self.source.surface_brightness(bx, by, [kw]).reshape(self.npix, self.npix)
        sigma_pix = float(ins["psf_fwhm"]) / (2 * math.sqrt(2 * math.log(2))) / self.ps
        if self.band is None:   # Model I: amplitude in lenstronomy units, Gaussian sky + Poisson counts
            model = gaussian_filter(sb * float(s["amp"]) * self.ps**2, sigma_pix, mode="constant")
            t = 10 ** rng.uniform(*ins["exptime_log10"])
            image = (rng.poisson(np.clip(model, 0, None) * t) / t
                     + rng.normal(0, ins["background_rms"], model.shape))
        else:                   # Models II/III: magnitude -> counts/s; the survey's sky, read and shot noise
            total = float(self.source.total_flux([{**kw, "amp": 1.0}])[0])
            cps = self.band.magnitude2cps(rng.uniform(*s["magnitude"]))
            model = gaussian_filter(sb * cps / total * self.ps**2, sigma_pix, mode="constant")
            sigma = np.sqrt(self.band.background_noise**2 + self.band.flux_noise(np.clip(model, 0, None))**2)
            image = model + rng.normal(size=model.shape) * sigma
        return image[None].astype(np.float32), truth
