"""Where a program's payments go on the US information returns (docs/compliance.md#tax-profiles).

``1099-NEC-1``: Form 1099-NEC box 1, nonemployee compensation (payments for services: referral fees, deal
registration, MDF and co-op funds paid for marketing services). ``1099-MISC-3``: Form 1099-MISC box 3, other income
(prizes and awards not for services: SPIFFs, loyalty points, training and activity rewards). ``none``: not reported
(rebates are reductions of the price the partner paid). Backup withholding is box 4 of the form the payment is
reported on. ``[compliance.tax] boxes`` overrides the default of a program's calculator.
"""

from __future__ import annotations

from collections.abc import Mapping

from payhub.errors import PayhubError
from payhub.settings import Settings

NEC, MISC, NONE = "1099-NEC-1", "1099-MISC-3", "none"
DEFAULT_BOXES: Mapping[str, str] = {
    "referral": NEC, "deal_registration": NEC, "mdf": NEC, "coop": NEC,
    "spiff": MISC, "loyalty_points": MISC, "activity": MISC,
    "rebate": NONE,
}
"""The box of each built-in calculator's programs; others need ``[compliance.tax] boxes``."""
FORMS = {NEC: "1099-NEC", MISC: "1099-MISC"}


class TaxReportError(PayhubError):
    """The report cannot be made as configured (a year without a threshold, a program without a box)."""


def box_of(program: str, settings: Settings, retired_calculator: str | None = None) -> str:
    """Where what ``program`` paid is reported: ``[compliance.tax] boxes``, else its calculator's default; for a
    program no longer in the settings, the default of ``retired_calculator`` (the calculator it last ran with).
    Raises TaxReportError when none of these says."""
    override = settings.compliance.tax.boxes.get(program)
    if override is not None:
        return override
    section = settings.programs.get(program)
    if section is None:
        default = DEFAULT_BOXES.get(retired_calculator or "")
        if default is not None:
            return default
        last = f" and its last calculator {retired_calculator!r} has no default box" if retired_calculator else ""
        raise TaxReportError(f"program {program!r} paid in this year is no longer in the settings{last}: configure "
                             f"it again (with event_types that no event has, it calculates nothing) and set "
                             f"compliance.tax.boxes.{program}")
    default = DEFAULT_BOXES.get(section.calculator)
    if default is None:
        raise TaxReportError(f"program {program!r} (calculator {section.calculator!r}) has no default box: set "
                             f"compliance.tax.boxes.{program} to \"1099-NEC-1\", \"1099-MISC-3\" or \"none\"")
    return default
