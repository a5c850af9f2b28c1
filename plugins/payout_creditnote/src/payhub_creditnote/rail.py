"""The ``credit_note`` rail: each payout becomes a UBL 2.1 credit note on the reseller's account.

For each payout ``send``

1. checks the payee (:meth:`CreditNoteRail.check_payee`: a country, an electronic address and a VAT id from their
   EN 16931 code lists, a VAT id for reverse charge, text XML can hold) and chooses the VAT category of its credit
   note (:mod:`payhub_creditnote.vat`, unless the settings fix one);
2. **issues** the credit note in the numbering ledger (:mod:`payhub_creditnote.ledger`): the same idempotency key
   always gets the same number; a new key gets the next number of the series, in one SQLite transaction together
   with the rendered document, validated against the UBL schema and the EN 16931 code lists
   (:func:`payhub_creditnote.ubl.validate`). A document that does not validate is REJECTED and uses no number;
3. writes the document atomically to the outbox as ``<document id>.xml`` (temporary file, fsync, rename, fsync of
   the directory);
4. if ``delivery_url`` is set, POSTs it to the billing system, idempotent by document number.

Once issued, a credit note exists: its payout is never answered RETRY or failed (that would make the rewards owed
again and issue a second credit note for them). A file that could not be written, or a delivery that failed, is
answered UNKNOWN; the core then calls ``lookup``, which writes missing files and retries the delivery (safe: the
billing system deduplicates by document number) before it answers. Outcomes: ACCEPTED once the document is in the
outbox (and delivered, with a billing system); REJECTED when the payee cannot receive credit notes or the billing
system refuses the document (the number stays issued, its state ``refused``); RETRY only when the ledger could not
be reached, so nothing was issued.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from payhub.api import (
    Amount,
    ConfigPath,
    InvalidRecord,
    Outcome,
    Payee,
    PayoutInstruction,
    PluginSettings,
    Rail,
    RailCapabilities,
    RailResult,
    RetryableRailError,
    check_currency,
    minor_units,
    private_mkstemp,
)
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from payhub_creditnote import codes, ubl, vat
from payhub_creditnote.ledger import DocumentRefused, Draft, Entry, Ledger

if TYPE_CHECKING:
    import httpx

    from payhub_creditnote.delivery import BillingClient

log = logging.getLogger(__name__)

STALE_TEMP_SECONDS = 3600.0


def _invalid(problem: str) -> PydanticCustomError:
    """A validation error whose message is ``problem`` alone (no "Value error," before it)."""
    return PydanticCustomError("en16931", "{problem}", {"problem": problem})


def _xml_text(value: str) -> str:
    problem = ubl.text_problem(value)
    if problem is not None:
        raise _invalid(problem)
    return value


def _code(value: object) -> object:
    return codes.normal(value) if isinstance(value, str) else value


# Text written into every credit note: refused at start-up when XML cannot hold it.
XmlText = Annotated[str, AfterValidator(_xml_text)]
# A code of an EN 16931 code list (or a VAT id), taken in upper case without surrounding blanks.
Code = Annotated[str, BeforeValidator(_code)]


Problem = tuple[tuple[str, ...], str]  # (key relative to the model, what is wrong)


def _refused(title: str, problems: list[Problem]) -> ValidationError:
    """One ValidationError naming the key (relative to the model) of each problem."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=_invalid(problem), loc=loc, input=None) for loc, problem in problems])


class SellerSettings(PluginSettings):
    """The vendor issuing the credit notes (EN 16931 BG-4). Every coded value is checked against its EN 16931 code
    list (:mod:`payhub_creditnote.codes`); codes and the VAT id are taken in upper case."""

    name: XmlText = Field(min_length=1)
    country: Code = Field(description="ISO 3166-1 alpha-2 (BR-CL-14); Greece is GR.")
    endpoint_id: XmlText = Field(min_length=1, description="Peppol electronic address (BT-34).")
    endpoint_scheme: Code = Field(min_length=1, description="Its EAS scheme (BR-CL-25): 0088 (GLN), 9930 (DE VAT), EM…")
    vat_id: Annotated[Code, AfterValidator(_xml_text)] | None = Field(
        None, description="Seller VAT identifier (BT-31), with its country's prefix (BR-CO-09).")
    registration_id: XmlText | None = Field(None, description="Seller legal registration identifier (BT-30).")
    identifier: XmlText | None = Field(None, description="Seller identifier (BT-29), e.g. a GLN or DUNS number.")
    identifier_scheme: Code | None = Field(None, description="ISO 6523 ICD of the identifier (BR-CL-10): 0088 (GLN), "
                                          "0060 (DUNS)…")
    street: XmlText | None = None
    additional_street: XmlText | None = None
    city: XmlText | None = None
    postal_code: XmlText | None = None
    contact_email: XmlText | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        problem = codes.country_problem(value)
        if problem is not None:
            raise _invalid(problem)
        return value

    @field_validator("endpoint_scheme")
    @classmethod
    def _eas(cls, value: str) -> str:
        problem = codes.eas_problem(value)
        if problem is not None:
            raise _invalid(problem)
        return value

    @field_validator("identifier_scheme")
    @classmethod
    def _icd(cls, value: str | None) -> str | None:
        problem = None if value is None else codes.icd_problem(value)
        if problem is not None:
            raise _invalid(problem)
        return value

    @field_validator("vat_id")
    @classmethod
    def _vat_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        country = info.data.get("country")  # absent when the country itself was refused
        problem = codes.vat_id_problem(value, country) if country else codes.vat_prefix_problem(value)
        if problem is not None:
            raise _invalid(problem)
        return value

    @model_validator(mode="after")
    def _scheme_needs_identifier(self) -> SellerSettings:
        if self.identifier_scheme and not self.identifier:
            raise _refused(type(self).__name__, [(("identifier_scheme",), "set without identifier (BT-29)")])
        return self

    def party(self) -> ubl.Party:
        identifier = (self.identifier_scheme or "", self.identifier) if self.identifier else None
        return ubl.Party(self.name, self.country, (self.endpoint_scheme, self.endpoint_id), vat_id=self.vat_id,
                         registration_id=self.registration_id, identifier=identifier, street=self.street,
                         additional_street=self.additional_street, city=self.city, postal_code=self.postal_code,
                         contact_email=self.contact_email)


class TaxSettings(PluginSettings):
    """The VAT category of the credit notes (EN 16931 BG-23, UNCL5305): ``auto``, chosen for each document from the
    seller's and the buyer's country and the buyer's VAT id (:mod:`payhub_creditnote.vat`), or one fixed category."""

    category: Literal["auto", "S", "Z", "E", "AE", "G", "O"] = "auto"
    rate: Amount | None = Field(None, ge=0, lt=100, description="Percent. With auto: the seller's standard rate "
                                "(category S), above 0, required for a seller in the EU. With S: required, above 0. "
                                "Otherwise 0 or none (none for O).")
    exemption_reason: XmlText | None = None
    exemption_reason_code: Code | None = Field(None, description="VATEX code (BR-CL-22), e.g. VATEX-EU-132.")

    @field_validator("category", mode="before")
    @classmethod
    def _not_intra_community_supply(cls, value: object) -> object:
        if value == "K":
            raise ValueError("category K (intra-community supply) is not offered: EN 16931 requires the delivery date "
                             "and country of the goods on such a document (BR-IC-11, BR-IC-12), which a credit note "
                             "for an incentive does not have; use AE (reverse charge) or auto")
        return value

    @field_validator("exemption_reason_code")
    @classmethod
    def _vatex(cls, value: str | None) -> str | None:
        problem = None if value is None else codes.vatex_problem(value)
        if problem is not None:
            raise _invalid(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaxSettings:
        problems = self._problems()
        if problems:
            raise _refused(type(self).__name__, problems)
        return self

    def _problems(self) -> list[Problem]:
        """What does not fit the category, by key."""
        reasons = [key for key in ("exemption_reason", "exemption_reason_code") if getattr(self, key)]
        category, rate = self.category, self.rate
        if category == "auto":
            if reasons:
                return [((key,), "category auto writes its own exemption reasons (VATEX-EU-AE, VATEX-EU-O); "
                         "exemption_reason and exemption_reason_code go with a fixed category") for key in reasons]
            if rate is not None and rate <= 0:
                return [(("rate",), "with category auto, rate is the seller's standard VAT rate: above 0 and below "
                         "100 percent")]
            return []
        problems: list[Problem] = []
        if category == "S":
            if rate is None or rate <= 0:
                problems.append((("rate",), "category S (standard rate) needs a rate above 0 and below 100 percent"))
        elif category == "O":
            if rate is not None:
                problems.append((("rate",), "category O (not subject to VAT) takes no rate"))
        elif rate not in (None, Decimal(0)):
            problems.append((("rate",), f"category {category} has a VAT rate of 0: set 0 or leave it out"))
        if category in ("S", "Z"):  # BR-S-10, BR-Z-10
            problems += [((key,), f"category {category} takes no exemption reason") for key in reasons]
        elif category in ubl.EXEMPT_CATEGORIES and not reasons:
            problems.append((("exemption_reason",), f"category {category} needs exemption_reason or "
                             "exemption_reason_code (a VATEX code)"))
        return problems

    def categories(self, seller_country: str) -> frozenset[str]:
        """Every category a credit note of a seller in ``seller_country`` can get."""
        return vat.categories(seller_country) if self.category == "auto" else frozenset({self.category})

    def for_buyer(self, seller_country: str, buyer_country: str, buyer_vat_id: str | None) -> ubl.Tax:
        """The VAT category, rate and exemption reason of a credit note from the seller to this buyer."""
        if self.category == "auto":
            return vat.choose(seller_country, self.rate, buyer_country, buyer_vat_id)
        rate = None if self.category == "O" else (self.rate or Decimal(0))
        return ubl.Tax(self.category, rate, self.exemption_reason, self.exemption_reason_code)


class CreditNoteSettings(PluginSettings):
    """Settings of a ``[rails.<name>]`` section with ``plugin = "credit_note"``."""

    outbox: ConfigPath
    ledger: ConfigPath | None = Field(None, description="Default: <outbox>.ledger.sqlite next to the outbox.")
    series: str = Field("CN-", description="Prefix of the document numbers (and of their file names); numbering "
                        "is gapless per series.")
    number_width: int = Field(6, ge=1, le=12)
    seller: SellerSettings
    tax: TaxSettings = Field(default_factory=TaxSettings)
    amount_includes_tax: bool = True
    currencies: list[str] | None = None
    item_name: XmlText = Field("Channel partner incentive", min_length=1)
    note: XmlText | None = None
    delivery_url: str | None = None
    delivery_token: SecretStr | None = None
    delivery_timeout_seconds: float = Field(20.0, gt=0, le=600)
    connect_timeout_seconds: float = Field(5.0, gt=0, le=600)
    max_batch: int = Field(100, ge=1, le=1000)

    @field_validator("series")
    @classmethod
    def _series(cls, value: str) -> str:
        if not re.fullmatch(r"([A-Za-z0-9_-][A-Za-z0-9._-]{0,39})?", value):
            raise ValueError("use letters, digits and . _ - only (at most 40, not starting with .): the series "
                             "begins each file name, so it cannot hold a / or lead out of the outbox")
        return value

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        checked = []
        for code in value:
            try:
                code = check_currency(code)
            except InvalidRecord as exc:
                raise ValueError(str(exc)) from None
            if minor_units(code) > 2:
                raise ValueError(f"{code} has {minor_units(code)} decimals; EN 16931 amounts have at most 2")
            checked.append(code)
        return checked

    @field_validator("delivery_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _documents_can_be_valid(self) -> CreditNoteSettings:
        """Refuse a seller and tax table under which a credit note would break an EN 16931 rule, naming the key."""
        seller, tax = self.seller, self.tax
        problems: list[Problem] = []
        if tax.category == "auto" and seller.country in vat.EU_MEMBER_STATES and tax.rate is None:
            problems.append((("tax", "rate"), f"required: with category auto, a seller in the EU ({seller.country}) "
                             f"credits buyers in {seller.country} at its standard VAT rate (category S)"))
        if tax.category == "auto" and seller.country not in vat.EU_MEMBER_STATES and tax.rate is not None:
            problems.append((("tax", "rate"), f"not used: with category auto, a seller outside the EU "
                             f"({seller.country}) issues credit notes of category O only; remove it"))
        categories = tax.categories(seller.country)
        with_vat = sorted(categories - {"O"})
        if with_vat and not seller.vat_id:
            problems.append((("seller", "vat_id"), f"required (BT-31) for VAT category {', '.join(with_vat)} "
                             f"({', '.join(f'BR-{c}-02' for c in with_vat)})"))
        if "O" in categories and not (seller.registration_id or seller.identifier):
            problems.append((("seller", "registration_id"), "required (BT-30), or else seller.identifier (BT-29): a "
                             "credit note of VAT category O carries no VAT identifier (BR-O-02), and the seller must "
                             "be identified (BR-CO-26)"))
        if problems:
            raise _refused(type(self).__name__, problems)
        return self

    @property
    def ledger_path(self) -> Path:
        return self.ledger or self.outbox.with_name(self.outbox.name + ".ledger.sqlite")


class CreditNoteRail(Rail):
    """Issues one numbered UBL credit note per payout into an outbox, optionally delivered to a billing system."""

    settings_model = CreditNoteSettings
    settings: CreditNoteSettings

    def __init__(self, name: str, settings: CreditNoteSettings, *,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(name, settings)
        # The schema is parsed when the first credit note is validated (ubl.validate, once per process); a schema
        # missing from the installation stops the rail now rather than at its first send.
        if not ubl.schema_path().is_file():
            raise FileNotFoundError(f"the UBL 2.1 CreditNote schema is missing: {ubl.schema_path()}")
        settings.outbox.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(settings.ledger_path)
        self.billing: BillingClient | None = None
        if settings.delivery_url:  # the delivery module (and httpx) only for a rail that delivers
            from payhub_creditnote import delivery

            self.billing = delivery.BillingClient(
                settings.delivery_url, settings.delivery_token, timeout=settings.delivery_timeout_seconds,
                connect_timeout=settings.connect_timeout_seconds, transport=transport)
        self._clean_temp_files()
        self._capabilities = RailCapabilities(
            lookup=True, reports_status=False, dedup_field="document number (ledger, by idempotency key)",
            currencies=frozenset(settings.currencies) if settings.currencies is not None else None,
            max_batch=settings.max_batch)
        try:
            self.repair()
        except OSError as exc:  # the next send or lookup tries again
            log.warning("rail %s: cannot write pending credit notes to %s: %s", name, settings.outbox, exc)

    @property
    def capabilities(self) -> RailCapabilities:
        return self._capabilities

    # ------------------------------------------------------------------------------------------------ payees

    def check_payee(self, payee: Payee, currency: str) -> str | None:
        """Why the payee's credit note could not be a valid EN 16931 document, or None: checked before routing
        takes this rail and before a number is issued, so a payee that cannot be credited is routed elsewhere or
        held with this reason."""
        if not payee.country:
            return f"payee {payee.id} has no country (a credit note names the buyer's country)"
        problem = codes.country_problem(payee.country)
        if problem is not None:
            return f"payee {payee.id}: country {problem}"
        endpoint = _endpoint(payee)
        if endpoint is None:
            return (f"payee {payee.id} has no electronic address for credit notes (peppol_id such as "
                    "0088:5790000436057, or an email)")
        problem = codes.eas_problem(endpoint[0])
        if problem is not None:
            return f"payee {payee.id}: the scheme of peppol_id {problem}"
        vat_id = _vat_id(payee)
        category = self._tax_for(payee).category
        if category == "AE" and not vat_id:
            return f"payee {payee.id} has no vat_id (needed for VAT category AE, BR-AE-02)"
        if vat_id and category != "O":  # written on the document (category O writes no VAT identifier)
            problem = codes.vat_id_problem(vat_id, payee.country) or ubl.text_problem(vat_id)
            if problem is not None:
                return f"payee {payee.id}: vat_id {problem}"
        for field, value in _buyer_text(payee, endpoint):
            problem = ubl.text_problem(value)
            if problem is not None:
                return f"payee {payee.id}: {field} {problem}"
        try:
            places = minor_units(currency)
        except InvalidRecord as exc:
            return str(exc)
        if places > 2:
            return f"{currency} has {places} decimals; credit notes take at most 2"
        return None

    # -------------------------------------------------------------------------------------------------- send

    def send(self, instructions: Sequence[PayoutInstruction]) -> list[RailResult]:
        self._repair_quietly()
        try:
            issued = self.ledger.get_many([i.idempotency_key for i in instructions])
        except sqlite3.Error as exc:
            raise RetryableRailError(f"numbering ledger {self.settings.ledger_path} unavailable: {exc}") from exc
        results: list[RailResult] = []
        delivery_down: str | None = None
        for n, instruction in enumerate(instructions):
            key = instruction.idempotency_key
            entry = issued.get(key)
            if entry is not None:  # issued before: the same credit note, whatever the payee looks like now
                results.append(self._settle(entry, deliver=delivery_down is None))
                if self.billing is not None and results[-1].outcome == Outcome.UNKNOWN and delivery_down is None:
                    delivery_down = results[-1].reason
                continue
            problem = self.check_payee(instruction.payee, instruction.currency)
            if problem:
                results.append(RailResult(key, Outcome.REJECTED, reason=problem))
                continue
            try:
                entry, created = self.ledger.issue(self._draft(instruction), self.settings.series, self._document_id,
                                                   ubl.validate)
            except DocumentRefused as exc:
                results.append(RailResult(key, Outcome.REJECTED, reason=f"the credit note is not valid: {exc}"))
                continue
            except (sqlite3.Error, OSError) as exc:  # nothing was issued
                reason = f"numbering ledger {self.settings.ledger_path} unavailable: {type(exc).__name__}: {exc}"
                if n == 0 and not issued:
                    raise RetryableRailError(reason) from exc
                # Not reached yet: RETRY, except payouts issued before (UNKNOWN: looked up, never sent afresh).
                results += [RailResult(i.idempotency_key, Outcome.UNKNOWN if i.idempotency_key in issued
                                       else Outcome.RETRY, reason=reason) for i in instructions[n:]]
                break
            if not created:
                log.info("rail %s: payout %s already has credit note %s", self.name, instruction.payout_id,
                         entry.document_id)
            self._after_issue(entry)
            results.append(self._settle(entry, deliver=delivery_down is None))
            if self.billing is not None and results[-1].outcome == Outcome.UNKNOWN and delivery_down is None:
                delivery_down = results[-1].reason
        return results

    def _after_issue(self, entry: Entry) -> None:
        """A seam for crash tests: called after the number is committed, before the document is written."""

    def _settle(self, entry: Entry, *, deliver: bool) -> RailResult:
        """Write the document and deliver it; the outcome of an issued credit note."""
        try:
            self._write(entry)
        except OSError as exc:
            return RailResult(entry.key, Outcome.UNKNOWN, provider_ref=entry.document_id,
                              reason=f"credit note {entry.document_id} issued, not yet written to the outbox: {exc}")
        if entry.state == "refused":
            return RailResult(entry.key, Outcome.REJECTED, provider_ref=entry.document_id, reason=entry.detail)
        if self.billing is None or entry.state == "delivered":
            return RailResult(entry.key, Outcome.ACCEPTED, provider_ref=entry.document_id)
        if not deliver:
            return RailResult(entry.key, Outcome.UNKNOWN, provider_ref=entry.document_id,
                              reason=f"credit note {entry.document_id} issued, delivery to billing pending")
        from payhub_creditnote.delivery import Delivered, NotDelivered, Refused

        answer = self.billing.deliver(entry.document_id, entry.number, entry.document)
        if isinstance(answer, Delivered):
            self.ledger.set_state(entry.key, "delivered", answer.reference)
            return RailResult(entry.key, Outcome.ACCEPTED, provider_ref=entry.document_id)
        if isinstance(answer, Refused):
            self.ledger.set_state(entry.key, "refused", answer.reason)
            log.error("rail %s: %s; the number stays issued", self.name, answer.reason)
            return RailResult(entry.key, Outcome.REJECTED, provider_ref=entry.document_id,
                              reason=f"{answer.reason}; credit note {entry.document_id} stays issued as refused")
        assert isinstance(answer, NotDelivered)
        return RailResult(entry.key, Outcome.UNKNOWN, provider_ref=entry.document_id,
                          reason=f"credit note {entry.document_id} issued, delivery to billing failed: {answer.reason}")

    # ------------------------------------------------------------------------------------------------ lookup

    def lookup(self, keys: Sequence[str]) -> dict[str, RailResult | None]:
        self._repair_quietly()
        try:
            entries = self.ledger.get_many(keys)
        except sqlite3.Error as exc:
            raise RetryableRailError(f"numbering ledger unavailable: {exc}") from exc
        found: dict[str, RailResult | None] = {}
        deliver = True
        for key in keys:
            entry = entries.get(key)
            if entry is None:
                found[key] = None  # never issued: sending again with the same key is safe
                continue
            result = self._settle(entry, deliver=deliver)
            if result.outcome == Outcome.UNKNOWN:
                deliver = False  # billing (or the outbox) is failing: leave the rest for the next lookup
                continue  # left out of the answer: stays unknown, asked about again later
            found[key] = result
        if keys and not found:
            raise RetryableRailError("credit notes issued, not yet written or delivered; asking again later")
        return found

    def close(self) -> None:
        if self.billing is not None:
            self.billing.close()

    # --------------------------------------------------------------------------------------------- documents

    def repair(self) -> int:
        """Write the documents of issued credit notes missing from the outbox; return how many were written."""
        pending = self.ledger.unwritten()
        for entry in pending:
            self._write(entry)
        return len(pending)

    def _repair_quietly(self) -> None:
        try:
            self.repair()
        except (OSError, sqlite3.Error) as exc:
            log.warning("rail %s: cannot write pending credit notes: %s", self.name, exc)

    def path_of(self, document_id: str) -> Path:
        return self.settings.outbox / f"{document_id}.xml"

    def _document_id(self, number: int) -> str:
        return f"{self.settings.series}{number:0{self.settings.number_width}d}"

    def _write(self, entry: Entry) -> None:
        """Put the entry's document in the outbox atomically (unless it is there already), then note it."""
        target = self.path_of(entry.document_id)
        if not (entry.written and target.exists()):
            if not (target.exists() and target.read_bytes() == entry.document):
                _atomic_write(target, entry.document)
            self.ledger.mark_written(entry.key)

    def _draft(self, instruction: PayoutInstruction) -> Draft:
        s = self.settings
        payee = instruction.payee
        places = minor_units(instruction.currency)
        tax = self._tax_for(payee)
        totals = ubl.amounts(instruction.amount, places, tax.rate, includes_tax=s.amount_includes_tax)
        issue_date = datetime.now(UTC).date()
        seller = s.seller.party()
        details = payee.details
        endpoint = _endpoint(payee)
        assert endpoint is not None  # check_payee ran first
        buyer = ubl.Party(payee.name, str(payee.country), endpoint, vat_id=_vat_id(payee),
                          registration_id=details.get("registration_id"), street=details.get("street"),
                          additional_street=details.get("additional_street"), city=details.get("city"),
                          postal_code=details.get("postal_code"), contact_email=payee.email)

        def render(document_id: str, day: date = issue_date) -> bytes:
            return ubl.render(ubl.CreditNote(
                document_id=document_id, issue_date=day, currency=instruction.currency, minor_units=places,
                seller=seller, buyer=buyer, buyer_reference=details.get("buyer_reference") or payee.id,
                tax=tax, amounts=totals, item_name=s.item_name, line_note=instruction.reference,
                object_id=instruction.idempotency_key, note=s.note))

        return Draft(key=instruction.idempotency_key, payout_id=instruction.payout_id, payee_id=payee.id,
                     amount=str(instruction.amount), currency=instruction.currency, issue_date=issue_date.isoformat(),
                     render=render)

    def _tax_for(self, payee: Payee) -> ubl.Tax:
        return self.settings.tax.for_buyer(self.settings.seller.country, str(payee.country), _vat_id(payee))

    def _clean_temp_files(self) -> None:
        """Remove temporary files a crash left in the outbox (old ones only: another process may be writing)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for path in self.settings.outbox.glob(".partial-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                pass


def _endpoint(payee: Payee) -> tuple[str, str] | None:
    """The buyer's electronic address: ``peppol_id`` (``scheme:id``, the scheme in upper case) from the payee
    details, else the email."""
    peppol = (payee.details.get("peppol_id") or "").strip()
    if peppol:
        scheme, sep, identifier = peppol.partition(":")
        if sep and scheme.strip() and identifier.strip():
            return codes.normal(scheme), identifier.strip()
        return None
    email = (payee.email or payee.details.get("email") or "").strip()
    return ("EM", email) if email and "@" in email else None


def _vat_id(payee: Payee) -> str | None:
    """The buyer's VAT id (BT-48) as written: upper case, without surrounding blanks; None when blank."""
    return codes.normal(payee.details.get("vat_id") or "") or None


def _buyer_text(payee: Payee, endpoint: tuple[str, str]) -> list[tuple[str, str]]:
    """(column, value) of every payee value a credit note writes as text (the VAT id apart: not always written)."""
    details = payee.details
    found = [("name", payee.name), ("email", payee.email or ""), ("electronic address", endpoint[1])]
    if not details.get("buyer_reference"):
        found.append(("id", payee.id))  # the default buyer reference
    found += [(column, str(details.get(column) or "")) for column in (
        "registration_id", "street", "additional_street", "city", "postal_code", "buyer_reference")]
    return found


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = private_mkstemp(target.parent, prefix=".partial-", suffix=".xml")  # 0600 (0640), any umask
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
