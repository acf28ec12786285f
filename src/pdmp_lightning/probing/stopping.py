"""When a probe stops: it has plateaued, the ranking is settled, or it reached the hard cap.

The rule never looks at the main training's length, so a 3-epoch and a 100-epoch training get the
same ranking. After each validation pass, for every probe still training:

- **cap**: it has trained ``max_epochs`` probe epochs.
- **plateau**: after ``min_epochs``, once it is clearly above chance (10% of the way from 1/C to 1),
  its best score has risen over the last ``patience`` passes by no more than the validation noise
  (one standard error of the score on the validation samples) or ``min_delta``, whichever is larger.
  A steady climber keeps training however small each step; noise alone does not keep a flat curve
  alive. A probe still near chance keeps training: a slow starter is not mistaken for a plateau.
- **settled**: every other probe has stopped and this one leads each of them by more than two
  standard errors of the difference on the validation samples. Its best score can only rise with
  more training, so the ranking can no longer change. A probe that trails a stopped one keeps
  training until it plateaus or reaches the cap: a slow learner is never cut short by the race.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pdmp_lightning.probing.outcome import CAP, PLATEAU, SETTLED, ProbeCurve, clearly_above_chance, standard_error
from pdmp_lightning.probing.settings import ProbeSettings

#: Standard errors by which the last probe still training must lead every stopped one to be settled.
SETTLED_STANDARD_ERRORS = 2.0
#: Slack on epoch comparisons (epochs are sums of batch fractions).
_EPS = 1e-9


def stop_reasons(
    curves: Mapping[str, ProbeCurve],
    active: Iterable[str],
    settings: ProbeSettings,
    chance: float,
    val_samples: int,
    top: float = 1.0,
) -> dict[str, str]:
    """Why each probe in ``active`` stops after the latest validation pass (absent: it keeps training).

    ``chance`` is the score of an uninformed predictor (1/C for accuracy), ``top`` the best possible.

    Examples:
        >>> from pdmp_lightning.probing.outcome import ProbeCurve
        >>> fast = ProbeCurve("audio", epochs=[1, 2, 3, 4], scores=[0.6, 0.61, 0.6, 0.6])
        >>> slow = ProbeCurve("visual", epochs=[1, 2, 3, 4], scores=[0.3, 0.4, 0.5, 0.7])
        >>> curves = {"audio": fast, "visual": slow}
        >>> stop_reasons(curves, ["audio", "visual"], ProbeSettings(), 1 / 4, 400)
        {'audio': 'plateau', 'visual': 'settled'}
    """
    active = sorted(active)
    reasons: dict[str, str] = {}
    for modality in active:
        curve = curves[modality]
        if curve.trained_epochs >= settings.max_epochs - _EPS:
            reasons[modality] = CAP
        elif (
            curve.trained_epochs >= settings.min_epochs - _EPS
            and clearly_above_chance(curve.best_score, chance, top)
            and curve.recent_gain(settings.patience)
            <= max(settings.min_delta, standard_error(curve.best_score, None, val_samples))
        ):
            reasons[modality] = PLATEAU
    still = [m for m in active if m not in reasons]
    if len(still) == 1:
        last = curves[still[0]]
        others = [c for m, c in curves.items() if m != still[0]]
        if last.trained_epochs >= settings.min_epochs - _EPS and all(
            last.best_score - other.best_score
            > SETTLED_STANDARD_ERRORS * standard_error(last.best_score, other.best_score, val_samples)
            for other in others
        ):
            reasons[still[0]] = SETTLED
    return reasons
