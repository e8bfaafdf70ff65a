"""The running server's parts, shared by the REST API, the DICOM network and scripting."""

import logging
import os
import time
from collections.abc import Callable

from .config import Configuration, ConfigurationError
from .dicom.dicom_json import parse_dictionary_option
from .dicom.levels import Level
from .events import Event, EventBus
from .index import ChangeType, GlobalProperty, Index, MetadataType, Resource
from .images import Images
from .index.index import DeletedResource
from .dicom.parse import parse_instance
from .ingest import SIGNATURES, IngestPipeline, IngestTranscoding
from .jobs import IndexJobsStore, JobsEngine
from .network.commitment import CommitmentReports
from .network.modalities import ModalityRegistry
from .network.queries import QueryRegistry
from .network.scp import DicomServer
from .storage import ContentType, StorageArea
from .storage.area import FileInfo
from .errors import ErrorCode, IsengardError

log = logging.getLogger(__name__)


class Lifecycle:
    """Lets the REST API stop or restart the process that serves it (/tools/shutdown, /tools/reset)."""

    def __init__(self) -> None:
        self.restart_requested = False
        self._stop: Callable[[], None] | None = None

    def attach(self, stop: Callable[[], None]) -> None:
        self._stop = stop

    def shutdown(self) -> None:
        self._request(restart=False)

    def restart(self) -> None:
        self._request(restart=True)

    def _request(self, restart: bool) -> None:
        if self._stop is None:
            raise IsengardError(ErrorCode.NOT_IMPLEMENTED, "This server is not run by the isengard command")
        self.restart_requested = restart
        self._stop()


class Isengard:
    def __init__(self, config: Configuration, lifecycle: Lifecycle | None = None):
        self.config = config
        self.lifecycle = lifecycle or Lifecycle()
        self.started = time.time()
        try:
            self.private_dictionary = parse_dictionary_option(config.dictionary)
        except ValueError as exc:
            raise ConfigurationError(f'Option "Dictionary": {exc}') from None
        # A setting that the REST API can change while running.
        self.metrics_enabled = bool(config.raw.get("MetricsEnabled", True))
        self.storage = StorageArea(
            config.storage_directory, compress=config.storage_compression, sync=config.sync_storage_area
        )
        swept = self.storage.sweep_temporary_files()
        if swept:
            log.warning("Removed %d temporary files left by an interrupted write", swept)
        config.index_directory.mkdir(parents=True, exist_ok=True)
        self.index = Index(config.database_url)
        self.events = EventBus()
        self.images = Images(self.storage)
        self.ingest = IngestPipeline(
            self.index,
            self.storage,
            self.events,
            overwrite=config.overwrite_instances,
            default_encoding=config.default_encoding,
        )
        if config.ingest_transcoding:
            self.ingest.transcoding = IngestTranscoding(
                config.ingest_transcoding, config.ingest_transcoding_of_uncompressed,
                config.ingest_transcoding_of_compressed, self.images.transcode,
            )
        self.modalities = ModalityRegistry(config.dicom_modalities, config.strict_aet_comparison)
        self.queries = QueryRegistry(config.query_retrieve_size)  # /modalities/{id}/query, /queries
        self.commitment_reports = CommitmentReports(config.storage_commitment_reports_size)  # /storage-commitment
        self.dicom_server = DicomServer(self)  # started with the HTTP server (cli.serve)
        self.jobs = JobsEngine(
            self,
            threads=config.concurrent_jobs or os.cpu_count() or 1,
            history_size=config.jobs_history_size,
            output_capacity=config.media_archive_size,
            store=IndexJobsStore(self.index) if config.save_jobs else None,
        )

    def delete(self, resource: Resource) -> DeletedResource:
        """Delete a resource with Orthanc's cascade; its files go once the index has forgotten them."""
        with self.index.write() as index:
            deleted = index.delete(resource)
        for file_uuid in deleted.files:
            self.storage.remove(file_uuid)
        for gone in deleted.deleted:
            self.events.publish(Event(ChangeType.DELETED, gone.level, gone.public_id))
        return deleted

    def reconstruct(self, resource: Resource) -> None:
        """Index again the main tags of the resource, of its descendants and of its ancestors, from
        the instances' files (after a change of the main tags' lists, or of DefaultEncoding)."""
        with self.index.read() as index:
            instances = index.descendants(resource, Level.INSTANCE)
        for instance in instances:
            parsed = parse_instance(self.read_dicom(instance.public_id), self.config.default_encoding)
            with self.index.write() as index:
                for level in Level:
                    ancestor = index.ancestor(instance, level)
                    index.replace_main_tags(ancestor.internal_id, parsed.main_tags[level])
                    index.set_metadata(ancestor.internal_id, SIGNATURES[level])

    def anonymized_patient_name(self) -> str:
        """"Anonymized<N>", N counting the patients this server anonymized, as Orthanc names them."""
        with self.index.write() as index:
            number = int(index.global_property(GlobalProperty.ANONYMIZATION_SEQUENCE) or 0) + 1
            index.set_global_property(GlobalProperty.ANONYMIZATION_SEQUENCE, str(number))
        return f"Anonymized{number}"

    def dicom_file_info(self, public_id: str) -> FileInfo:
        with self.index.read() as index:
            instance = index.get(public_id, Level.INSTANCE)
            attachment = index.attachment(instance.internal_id, ContentType.DICOM)
        if attachment is None:
            raise IsengardError(ErrorCode.INEXISTENT_FILE, f"No DICOM file for instance {public_id}")
        return attachment.info

    def read_dicom(self, public_id: str) -> bytes:
        return self.storage.read(self.dicom_file_info(public_id))

    def read_dicom_header(self, public_id: str) -> bytes:
        """The DICOM file of an instance up to its pixel data, without reading the pixels when possible."""
        with self.index.read() as index:
            instance = index.get(public_id, Level.INSTANCE)
            attachment = index.attachment(instance.internal_id, ContentType.DICOM)
            offset = index.metadata_value(instance.internal_id, MetadataType.PIXEL_DATA_OFFSET)
        if attachment is None:
            raise IsengardError(ErrorCode.INEXISTENT_FILE, f"No DICOM file for instance {public_id}")
        if offset and offset.isdigit():
            return self.storage.read_range(attachment.info, int(offset))
        return self.storage.read(attachment.info)

    def storage_for_find(self, answers: bool) -> StorageArea | None:
        """The storage area, if StorageAccessOnFind lets a find read it to match (or, with
        `answers`, to answer); None otherwise."""
        access = self.config.storage_access_on_find
        return self.storage if access == "Always" or (answers and access == "Answers") else None

    def close(self) -> None:
        self.dicom_server.stop()
        self.jobs.close()
        self.images.close()
        self.index.close()
        self.storage.close()
