"""Leaked patients: how many training patients a synthetic set copies, not just how many images.

Every training image is given a patient by one rule (``assign_patients``):

- ``regex``: a user's regular expression searched in the image's id, its first group naming
  the patient (``deepssim audit --group-by REGEX``);
- ``dicom``: the DICOM PatientID (0010,0020), when the training images are DICOM;
- ``bids``: the BIDS subject, a ``sub-<label>`` component of the image's path;
- ``scan``: one patient per scan, the slices of a NIfTI or DICOM volume together and every other
  image alone; ``image``: one patient per image (``--group-by none``, or a set without volumes).

Without ``group_by`` the first of ``dicom``, ``bids`` that names a patient for at least
``DEFAULT_RULE_SHARE`` of the training images is used, else ``scan``. Under any rule, a
training image it names no patient for is its own patient, by scan (a volume's slices
together), and is counted as unmatched.

A patient has leaked when at least one synthetic image's first match is one of their images and
is classed ``duplicate``. The observed count is a fact of this release; two quantities get a 95%
interval: the number of patients a release of the same size leaks on average
(``leaked_interval``), and the number of patients the generator copies at all, of which the
observed count is a lower bound (``patients_at_risk``, Chao1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..classes import wilson_interval
from ..readers.patients import bids_subject, compile_group_by, group_key, scan_name
from ..readers.spec import ImageRef
from .markup import escape, number, percent

GROUP_NONE = "none"
"""``group_by`` value for one patient per training image."""
DEFAULT_RULE_SHARE = 0.9
"""Share of the training images the DICOM or BIDS rule must name a patient for to be the default:
a few stray files do not turn it off, a set where many lack it is not counted by it."""
BOOTSTRAP_REPLICATES = 2000
"""Bootstrap resamples of the synthetic set behind the interval of the patients leaked."""
BOOTSTRAP_SEED = 0
"""Seed of those resamples: the interval is the same on every run of one audit."""
MOST_COPIED_PATIENTS = 10
"""Patients listed in the summary's ``patients.most_copied`` and the report."""
SYNTHETIC_LISTED = 5
"""Synthetic images named per patient in ``most_copied`` (the most similar first)."""
UNMATCHED_LISTED = 10
"""Training ids the rule named no patient for, listed in the summary (all are counted)."""
PATIENT_COLUMNS = ["patient", "train_images", "copies", "copy_rate", "train_images_copied", "max_score",
                   "most_similar_synthetic"]
"""The columns of ``patients.csv``."""
RULE_TEXT = {
    "regex": "the first group of the regular expression {group_by} in each training id",
    "dicom": "the DICOM PatientID (0010,0020)",
    "bids": "the BIDS subject (sub-<label>) in each training path",
    "scan": "one patient per scan: the slices of a volume together, every other image alone",
    "image": "one patient per training image",
}
"""Each rule in words (the report's)."""
INTERVAL_METHOD = ("expected count of a release of this size: observed count, score interval with the variance "
                   "of a bootstrap from the generator as estimated (leaked patients plus Chao1's unseen)")
"""``interval.method`` of the summary: how ``n_leaked_ci95`` is found (``leaked_interval``)."""
AT_RISK_METHOD = "Chao1 (bias-corrected where no patient is copied twice), log-normal interval"
"""``interval.at_risk_method`` of the summary: how ``patients_at_risk`` is found."""
Z95 = 1.959963984540054
"""The normal quantile of a two-sided 95% interval."""
_DRAWS_PER_BLOCK = 1 << 22
"""Bootstrap counts (replicates x patients) held at once: bounds the memory."""


def check_group_by(group_by: str | None) -> re.Pattern[str] | str | None:
    """``group_by`` checked: None (the default rules), ``"none"`` (one patient per image), or a
    regular expression, returned compiled.

    Raises:
        ValueError: the expression does not compile or has no group (one line, naming
            ``--group-by``).
    """
    if group_by is None or group_by == GROUP_NONE:
        return group_by
    if not isinstance(group_by, str):
        raise ValueError(f"--group-by: expected a regular expression or 'none', got {group_by!r}")
    return compile_group_by(group_by)


@dataclass(frozen=True)
class Patients:
    """The patient of every training image, and the rule that named them.

    Attributes:
        rule: ``regex``, ``dicom``, ``bids``, ``scan`` or ``image`` (module docstring).
        group_by: The regular expression of the ``regex`` rule, else None.
        names: The patient of each training image, in the training set's order.
        unmatched: Positions of the training images the rule named no patient for (each its
            own patient, by scan).
    """

    rule: str
    group_by: str | None
    names: list[str]
    unmatched: list[int]


def assign_patients(ids: Sequence[str], refs: Sequence[ImageRef], group_by: str | None) -> Patients:
    """The patient of every training image (``ids`` as the audit names them, ``refs`` the
    images), by ``group_by`` or the default rules (module docstring).

    Raises:
        ValueError: a bad ``group_by`` (``check_group_by``).
    """
    checked = check_group_by(group_by)
    scans = [scan_name(i, r) for i, r in zip(ids, refs)]
    if checked == GROUP_NONE:
        return Patients("image", None, list(ids), [])
    if isinstance(checked, re.Pattern):
        rule, keys = "regex", [group_key(checked, i) for i in ids]
    else:
        rule, keys = _default_rule(ids, refs)
        if rule is None:
            return Patients("scan" if scans != list(ids) else "image", None, scans, [])
    names = [k if k is not None else s for k, s in zip(keys, scans)]
    unmatched = [k for k, key in enumerate(keys) if key is None]
    return Patients(rule, checked.pattern if isinstance(checked, re.Pattern) else None, names, unmatched)


def _default_rule(ids: Sequence[str], refs: Sequence[ImageRef]) -> tuple[str | None, list[str | None]]:
    """The first default rule that names a patient for enough training images, and its keys."""
    need = DEFAULT_RULE_SHARE * len(ids)
    candidates: list[tuple[str, list[str | None]]] = [("dicom", [r.patient for r in refs]),
                                                      ("bids", [bids_subject(i) for i in ids])]
    for rule, keys in candidates:
        if keys and sum(k is not None for k in keys) >= need:
            return rule, keys
    return None, []


@dataclass(frozen=True)
class PatientRow:
    """One row of ``patients.csv``: a training patient and how often the synthetic set copies them.

    Attributes:
        patient: The patient's name under the rule.
        train_images: Their training images.
        copies: Synthetic images whose first match is one of their images, classed duplicate.
        copy_rate: ``copies`` over the synthetic images: the patient's memorization rate.
        train_images_copied: Their distinct training images copied.
        max_score: The best DeepSSIM score of those copies (None without copies).
        synthetic: The synthetic images copying them, most similar first.
    """

    patient: str
    train_images: int
    copies: int
    copy_rate: float
    train_images_copied: int
    max_score: float | None
    synthetic: tuple[str, ...]

    def to_row(self) -> dict[str, str]:
        return {"patient": self.patient, "train_images": str(self.train_images), "copies": str(self.copies),
                "copy_rate": f"{self.copy_rate:.6f}", "train_images_copied": str(self.train_images_copied),
                "max_score": "" if self.max_score is None else f"{self.max_score:.6f}",
                "most_similar_synthetic": self.synthetic[0] if self.synthetic else ""}


def patient_rows(patients: Patients, best_train: np.ndarray, labels: np.ndarray, best_scores: np.ndarray,
                 synthetic_ids: Sequence[str]) -> list[PatientRow]:
    """One row per training patient, the most copied first (copies, then distinct images
    copied, then best score, then name); patients never copied follow by name."""
    n = len(labels)
    images: dict[str, int] = {}
    for name in patients.names:
        images[name] = images.get(name, 0) + 1
    copied: dict[str, list[tuple[float, str, int]]] = {}
    for s in np.flatnonzero(labels == "duplicate"):
        t = int(best_train[s])
        copied.setdefault(patients.names[t], []).append((float(best_scores[s]), synthetic_ids[s], t))
    rows = []
    for name, count in images.items():
        hits = sorted(copied.get(name, []), key=lambda h: (-h[0], h[1]))
        rows.append(PatientRow(name, count, len(hits), len(hits) / n if n else 0.0, len({h[2] for h in hits}),
                               hits[0][0] if hits else None, tuple(h[1] for h in hits)))
    return sorted(rows, key=lambda r: (-r.copies, -r.train_images_copied,
                                       -(r.max_score if r.max_score is not None else -np.inf), r.patient))


def _assemblage(counts: np.ndarray, n_patients: int) -> np.ndarray:
    """The copy probabilities of every patient the generator may copy, estimated from the copies
    per leaked patient (``counts``): the leaked patients' shares shrunk by the mass of the patients
    not yet seen, and that mass spread evenly over the top of Chao1's interval of their number
    (the assemblage behind iNEXT's bootstrap, Chao et al. 2014). Sums to 1."""
    d = float(counts.sum())
    f1 = int(np.sum(counts == 1))
    # As many unseen patients as Chao1's interval allows: where few copies show, its point
    # estimate sees too few, and the replicates then vary too little.
    unseen = max(_chao1(counts, n_patients)[2] - len(counts), 0)
    share = counts / d
    # The unseen patients' mass: the singletons' share, scaled down where few are thought unseen.
    missing = f1 / d * (d * unseen / (d * unseen + f1) if f1 else 1.0) if unseen else 0.0
    tail = np.sum(share * (1 - share) ** d)
    seen = share * (1 - (missing / tail if tail > 0 else 0.0) * (1 - share) ** d)
    probs = np.concatenate([seen, np.full(unseen, missing / unseen if unseen else 0.0)])
    return probs / probs.sum()


def _chao1_unseen(f1: int, f2: int, d: float) -> float:
    """Chao1's estimate of the patients at risk not yet copied, from the patients copied once
    (``f1``) and twice (``f2``) among ``d`` copies (bias-corrected where ``f2`` is 0)."""
    if d <= 0:
        return 0.0
    a = (d - 1) / d
    return a * f1 * f1 / (2 * f2) if f2 > 0 else a * f1 * (f1 - 1) / 2


def leaked_interval(copied_patient: np.ndarray, n_synthetic: int, n_patients: int, *,
                    replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> tuple[int, int]:
    """The 95% interval of the number of distinct patients a release of ``n_synthetic`` images
    from the same generator leaks on average (the expected count, of which the observed count is
    the unbiased estimate).

    ``copied_patient`` is the patient index of each copy, one entry per synthetic image classed
    duplicate. The observed count varies from release to release by more than a bootstrap of the
    synthetic images shows: patients copied once could as well have been missed, and patients not
    copied this time could have been. So the replicates draw from the generator as estimated
    (``_assemblage``: the leaked patients plus the Chao1 estimate of those at risk not yet seen):
    each replicate draws its number of copies from the binomial of the observed rate and counts the
    distinct patients they show. The interval is the observed count +- 1.96 of their standard
    deviation, widened to whole patients and kept within 0 .. ``n_patients``. Without copies its top
    is the Wilson bound of the number of copies (a release leaks no more patients than it holds
    copies). It depends on nothing but the copies per patient, ``n_synthetic`` and ``seed``.
    """
    if n_synthetic <= 0:
        return 0, 0
    d = len(copied_patient)
    if d == 0:
        return 0, min(int(np.ceil(n_synthetic * wilson_interval(0, n_synthetic)[1])), n_patients)
    observed_counts = np.unique(copied_patient, return_counts=True)[1]
    observed = len(observed_counts)
    probs = _assemblage(observed_counts, n_patients)
    width = len(probs)
    rng = np.random.default_rng(seed)
    hits = rng.binomial(n_synthetic, d / n_synthetic, size=replicates)
    # Each replicate's copies per patient at once: a cost of replicates x patients, whatever the
    # number of copies; blocks bound the memory.
    per_block = max(1, _DRAWS_PER_BLOCK // width)
    counts = np.concatenate([np.count_nonzero(rng.multinomial(hits[k:k + per_block], probs), axis=1)
                             for k in range(0, replicates, per_block)])
    # A score interval, as Wilson's for a proportion: the variance grows with the expected count
    # (var = dispersion x mean, the dispersion measured by the replicates at the observed count), so
    # a low count does not give a narrow interval that misses a higher truth.
    dispersion = float(np.var(counts, ddof=1)) / observed if replicates > 1 else 0.0
    centre = observed + Z95 * Z95 * dispersion / 2
    half = Z95 * np.sqrt(dispersion * observed + (Z95 * Z95 * dispersion / 2) ** 2)
    lo = int(np.floor(centre - half + 1e-9))
    hi = int(np.ceil(centre + half - 1e-9))
    return max(lo, 0), min(hi, n_patients)


def patients_at_risk(copied_patient: np.ndarray, n_patients: int) -> tuple[float, int, int]:
    """The number of training patients the generator copies at all, given unlimited sampling:
    Chao1's estimate (the leaked patients plus those not yet seen, from how many were copied once
    and twice) with its 95% log-normal interval (Chao 1987), as iNEXT's ``ChaoRichness``;
    returns ``(estimate, low, high)``, the interval in whole patients, all kept within
    observed .. ``n_patients``.

    A lower bound where copy rates differ widely between patients: patients copied too rarely to
    show up in the release leave no trace in it.
    """
    return _chao1(np.unique(copied_patient, return_counts=True)[1], n_patients)


def _chao1(counts: np.ndarray, n_patients: int) -> tuple[float, int, int]:
    """``patients_at_risk`` from the copies per leaked patient."""
    observed, d = len(counts), float(counts.sum())
    if d == 0:
        return 0.0, 0, 0
    f1, f2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    a = (d - 1) / d
    unseen = _chao1_unseen(f1, f2, d)
    if unseen <= 0:
        return float(observed), observed, observed
    if f2 > 0:
        r = f1 / f2
        var = f2 * (a / 2 * r ** 2 + a * a * r ** 3 + a * a / 4 * r ** 4)
    else:
        var = a * f1 * (f1 - 1) / 2 + a * a * f1 * (2 * f1 - 1) ** 2 / 4 - a * a * f1 ** 4 / 4 / (observed + unseen)
    k = float(np.exp(Z95 * np.sqrt(np.log(1 + max(var, 0.0) / unseen ** 2))))
    lo = int(np.floor(observed + unseen / k + 1e-9))
    hi = int(np.ceil(observed + unseen * k - 1e-9))
    return (min(observed + unseen, float(n_patients)), min(max(lo, observed), n_patients),
            min(max(hi, observed), n_patients))


def patients_summary(patients: Patients, rows: Sequence[PatientRow], n_synthetic: int, *,
                     replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """The summary's ``patients`` section (docs/patients.md lists its fields)."""
    index = {r.patient: k for k, r in enumerate(rows)}
    copied_patient = np.array([index[r.patient] for r in rows for _ in range(r.copies)], dtype=np.int64)
    n_patients = len(rows)
    leaked = sum(1 for r in rows if r.copies)
    lo, hi = leaked_interval(copied_patient, n_synthetic, n_patients, replicates=replicates, seed=seed)
    at_risk, risk_lo, risk_hi = patients_at_risk(copied_patient, n_patients)
    copies = [r.copies for r in rows]
    return {
        "rule": patients.rule,
        "group_by": patients.group_by,
        "n_train_patients": n_patients,
        "unmatched_train_images": len(patients.unmatched),
        "unmatched_examples": [patients.names[k] for k in patients.unmatched[:UNMATCHED_LISTED]],
        "n_leaked": leaked,
        "n_leaked_ci95": [lo, hi],
        "leaked_fraction": leaked / n_patients if n_patients else 0.0,
        "leaked_fraction_ci95": [lo / n_patients, hi / n_patients] if n_patients else [0.0, 0.0],
        "patients_at_risk": round(at_risk, 1),
        "patients_at_risk_ci95": [risk_lo, risk_hi],
        "copies_per_patient": {"mean": float(np.mean(copies)) if copies else 0.0,
                               "mean_leaked": sum(copies) / leaked if leaked else 0.0,
                               "max": max(copies, default=0)},
        "most_copied": [{"patient": r.patient, "copies": r.copies, "train_images_copied": r.train_images_copied,
                         "train_images": r.train_images, "max_score": round(r.max_score, 6),
                         "synthetic": list(r.synthetic[:SYNTHETIC_LISTED])}
                        for r in rows[:MOST_COPIED_PATIENTS] if r.copies and r.max_score is not None],
        "interval": {"method": INTERVAL_METHOD, "replicates": replicates, "seed": seed,
                     "at_risk_method": AT_RISK_METHOD,
                     "copied_once": sum(1 for c in copies if c == 1), "copied_twice": sum(1 for c in copies if c == 2)},
    }


def _interval(p: Mapping[str, Any], field: str = "n_leaked_ci95") -> tuple[Any, Any]:
    ci = p.get(field)
    return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)


def leaked_card(summary: Mapping[str, Any]) -> str:
    """The report's headline card: patients leaked of the training patients, and the interval of
    the number a release of this size leaks on average."""
    p = summary.get("patients")
    p = p if isinstance(p, Mapping) else {}
    lo, hi = _interval(p)
    return (f"{number(p.get('n_leaked'))} / {number(p.get('n_train_patients'))}"
            f"<small>95% CI {number(lo)} – {number(hi)}</small>")


def patients_section(summary: Mapping[str, Any]) -> str:
    """The report's leaked-patients section (HTML), from the summary's ``patients``; empty
    when the summary has none."""
    p = summary.get("patients")
    if not isinstance(p, Mapping):
        return ""
    rule = str(p.get("rule"))
    said = escape(RULE_TEXT.get(rule, rule)).replace("{group_by}", f"<code>{escape(p.get('group_by'))}</code>")
    lo, hi = _interval(p)
    head = (f"<p><b>{number(p.get('n_leaked'))}</b> of {number(p.get('n_train_patients'))} training patients "
            f"leaked ({percent(p.get('leaked_fraction'))}): a patient leaks when a synthetic image's "
            f"best match is one of their images and a duplicate. Patients: {said}. Another release of this "
            f"size leaks {number(lo)} – {number(hi)} patients on average (95% interval).")
    if p.get("patients_at_risk") is not None:
        risk_lo, risk_hi = _interval(p, "patients_at_risk_ci95")
        head += (f" Patients at risk, those the generator copies at all given unlimited sampling: "
                 f"about {number(p.get('patients_at_risk'), '{:.0f}')} (95% interval {number(risk_lo)} – "
                 f"{number(risk_hi)}, Chao1; a lower bound when some patients are copied too rarely to show).")
    if p.get("unmatched_train_images"):
        head += (f" {number(p['unmatched_train_images'])} training image(s) matched no patient and count "
                 "as their own (listed in summary.json).")
    head += "</p>"
    items = p.get("most_copied") or []
    if not items:
        return head + "<p class=muted>No patient was copied.</p>"
    body = "".join(
        f"<tr><td class=name>{escape(it.get('patient', ''))}</td><td class=num>{number(it.get('copies'))}</td>"
        f"<td class=num>{number(it.get('train_images_copied'))} / {number(it.get('train_images'))}</td>"
        f"<td class=num>{number(it.get('max_score'), '{:.3f}')}</td>"
        f"<td class=name>{escape(', '.join(str(s) for s in it.get('synthetic') or []))}</td></tr>"
        for it in items)
    return (head + "<table class=list><thead><tr><th>Patient</th><th>Copies</th><th>Images copied</th>"
            f"<th>Max score</th><th>Synthetic images (most similar first)</th></tr></thead><tbody>{body}"
            "</tbody></table><p class=muted>Every patient: patients.csv.</p>")
