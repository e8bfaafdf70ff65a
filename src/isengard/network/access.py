"""Who may associate with the DICOM server, and what each remote node may ask of it.

Orthanc's rules: the called AET must be DicomAet if DicomCheckCalledAet; an association from
an AET that DicomModalities does not list is refused unless one of the DicomAlwaysAllow*
options is true; then each operation is allowed if its DicomAlwaysAllow* option is true, or
else if the calling modality's Allow* flag is. With DicomCheckModalityHost, a modality is
recognised only from the IP address of its Host.
"""

from dataclasses import dataclass

from ..config import Configuration
from .modalities import Modality, ModalityRegistry, Request, same_aet

# The options (DicomAlwaysAllow*) that let any node do an operation, even unknown nodes.
ALWAYS_ALLOW = {
    Request.ECHO: "dicom_always_allow_echo",
    Request.STORE: "dicom_always_allow_store",
    Request.FIND: "dicom_always_allow_find",
    Request.FIND_WORKLIST: "dicom_always_allow_find_worklist",
    Request.GET: "dicom_always_allow_get",
    Request.MOVE: "dicom_always_allow_move",
}


@dataclass(frozen=True)
class Refusal:
    """Why an association or an operation is refused, for the log."""

    reason: str
    bad_called_aet: bool = False  # else the calling AET, or the address, is refused


class AccessControl:
    def __init__(
        self,
        modalities: ModalityRegistry,
        own_aet: str,
        always_allowed: frozenset[Request],
        check_called_aet: bool = False,
        check_modality_host: bool = False,
    ):
        self.modalities = modalities
        self.own_aet = own_aet
        self.always_allowed = always_allowed
        self.check_called_aet = check_called_aet
        self.check_modality_host = check_modality_host

    @classmethod
    def from_config(cls, config: Configuration, modalities: ModalityRegistry) -> "AccessControl":
        return cls(
            modalities,
            config.dicom_aet,
            frozenset(request for request, attribute in ALWAYS_ALLOW.items() if getattr(config, attribute)),
            check_called_aet=config.dicom_check_called_aet,
            check_modality_host=config.dicom_check_modality_host,
        )

    def refuse_association(self, calling_aet: str, called_aet: str, remote_ip: str) -> Refusal | None:
        if self.check_called_aet and not same_aet(called_aet, self.own_aet, self.modalities.strict_aet_comparison):
            return Refusal(f'the called AET "{called_aet}" is not this server\'s ("{self.own_aet}")', True)
        if self.always_allowed:
            return None  # any node may at least do the operations always allowed
        known = self.modalities.with_aet(calling_aet)
        if not known:
            return Refusal(f'the calling AET "{calling_aet}" is not a known modality')
        if self.check_modality_host and not any(m.host == remote_ip for m in known):
            hosts = ", ".join(sorted({m.host for m in known}))
            return Refusal(f'the modality "{calling_aet}" is expected from {hosts}, not from {remote_ip}')
        return None

    def refuse_request(self, calling_aet: str, remote_ip: str, request: Request) -> Refusal | None:
        if request in self.always_allowed:
            return None
        known = self.modalities.with_aet(calling_aet)
        if not known:
            return Refusal(f'the calling AET "{calling_aet}" is not a known modality')
        if len(known) == 1:
            return self._refuse_for(known[0], calling_aet, remote_ip, request)
        return self._refuse_for_several(known, calling_aet, remote_ip, request)

    def _refuse_for(self, modality: Modality, calling_aet: str, remote_ip: str, request: Request) -> Refusal | None:
        if self.check_modality_host and modality.host != remote_ip:
            return Refusal(f'the modality "{calling_aet}" is expected from {modality.host}, not from {remote_ip}')
        if not modality.allows(request):
            return Refusal(f'{request.value} is not allowed for the modality "{calling_aet}"')
        return None

    def _refuse_for_several(self, known: list[Modality], calling_aet: str, remote_ip: str, request: Request) -> Refusal | None:
        """Several modalities share the AET: the one at the peer's address decides (with
        DicomCheckModalityHost), else the operation must be allowed for all of them."""
        if self.check_modality_host and any(m.host == remote_ip and m.allows(request) for m in known):
            return None
        if all(m.allows(request) for m in known):
            return None
        return Refusal(f'{request.value} is not allowed for the modalities called "{calling_aet}"')
