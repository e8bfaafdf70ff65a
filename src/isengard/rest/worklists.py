"""POST /modalities/{id}/find-worklist: a worklist query sent to a modality (C-FIND SCU).

The body is `{"Query": {tag: value}, "Short"/"Full": bool, "Timeout": seconds}`, or, as in Orthanc
before 1.9.5, the query itself. Tags are keywords or "gggg,eeee"; a value is a string, or a list
of objects for a sequence. The query bears the Specific Character Set of DefaultEncoding unless
it gives one. The answers are shown as Orthanc shows them: tag names (or, with Short, "gggg,eeee"
keys; with Full, Orthanc's full form), their Specific Character Set being DefaultEncoding's,
to which Orthanc converts them.
"""

from collections.abc import Mapping
from typing import Any

import orjson
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.charsets import ENCODINGS
from ..dicom.dicom_json import dataset_to_json
from ..dicom.tags import SPECIFIC_CHARACTER_SET, format_tag, parse_tag
from ..errors import ErrorCode, IsengardError
from ..index.find import value_representation
from ..network.modalities import bad_format, parse_timeout
from ..network.scu import ScuSettings
from ..network.worklists import find_worklists_scu
from .modalities import requested_modality, json_object_body
from .responses import json, server
from .threads import in_thread

INTEGER_VRS = frozenset({"US", "SS", "UL", "SL"})
FLOAT_VRS = frozenset({"FL", "FD"})
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
SPECIFIC_CHARACTER_SET_KEYS = {"full": "0008,0005", "short": "0008,0005", "simplify": "SpecificCharacterSet"}


def _bad_type(tag: int) -> IsengardError:
    return IsengardError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {format_tag(tag)}")


def _out_of_range(tag: int, text: str) -> IsengardError:
    quoted = orjson.dumps(text).decode()
    return bad_format(f"While creating a DICOM instance, tag ({format_tag(tag)}) has out-of-range value: {quoted}")


def _element(key: str, value: Any) -> DataElement:
    try:
        tag = int(parse_tag(key))
    except ValueError as exc:
        raise IsengardError(ErrorCode.UNKNOWN_DICOM_TAG, str(exc), http_status=500) from None  # as Orthanc
    vr = value_representation(tag)
    if isinstance(value, list) and vr == "SQ":
        if not all(isinstance(item, dict) for item in value):
            raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE)
        return DataElement(tag, vr, Sequence([query_dataset(item) for item in value]))
    if not isinstance(value, str):
        raise _bad_type(tag)
    try:
        return DataElement(tag, vr, _typed_value(vr, value))
    except ValueError:  # text for a sequence, or not a number for a VR of numbers (Orthanc sends those of DS, IS)
        raise _out_of_range(tag, value) from None


def _typed_value(vr: str, text: str) -> Any:
    """The string of a JSON query as the value pydicom writes for the tag's VR."""
    if not text:
        return None
    if vr == "SQ":
        raise ValueError("a sequence")
    if vr in INTEGER_VRS:
        return int(text)
    if vr in FLOAT_VRS:
        return float(text)
    return text.encode("utf-8") if vr in BINARY_VRS else text


def query_dataset(query: Mapping[str, Any]) -> Dataset:
    dataset = Dataset()
    for key, value in query.items():
        dataset.add(_element(key, value))
    return dataset


def _answer_json(answer: Dataset, mode: str, charset_term: str) -> dict[str, Any]:
    result = dataset_to_json(answer, mode, max_length=0)
    if SPECIFIC_CHARACTER_SET in answer:  # Orthanc converts each answer to its DefaultEncoding
        key = SPECIFIC_CHARACTER_SET_KEYS[mode]
        result[key] = {**result[key], "Value": charset_term} if mode == "full" else charset_term
    return result


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad_format(f"Boolean value expected in field: {name}")
    return value


def _answers_mode(body: Mapping[str, Any]) -> str:
    """Short wins over Full; tag names by default."""
    short, full = _flag(body, "Short"), _flag(body, "Full")
    return "short" if short else "full" if full else "simplify"


async def find_worklist(request: Request) -> Response:
    modality = requested_modality(request)
    body = await json_object_body(request, "Must provide a JSON object")
    if "Query" in body:
        if not isinstance(body["Query"], dict):
            raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE)
        query_json, mode = body["Query"], _answers_mode(body)
        timeout = parse_timeout(body["Timeout"]) if "Timeout" in body else 0
    else:  # the body is the query (Orthanc <= 1.9.4)
        query_json, mode, timeout = body, "simplify", 0
    isengard = server(request)
    charset_term = ENCODINGS[isengard.ingest.default_encoding][1]
    query = query_dataset(query_json)
    if SPECIFIC_CHARACTER_SET not in query:
        query.SpecificCharacterSet = charset_term
    settings = ScuSettings.from_config(isengard.config)
    answers = await in_thread(find_worklists_scu, modality, settings, query, timeout)
    return json([_answer_json(answer, mode, charset_term) for answer in answers])


def routes() -> list[Route]:
    return [Route("/modalities/{id}/find-worklist", find_worklist, methods=["POST"])]
