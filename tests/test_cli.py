"""The `isengard` command: default configuration file, start-up errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import child_pids, free_port, running_isengard, sample

ISENGARD = [sys.executable, "-m", "isengard.cli"]


def test_config_option_writes_a_default_file_that_serves(tmp_path):
    path = tmp_path / "isengard.json"
    result = subprocess.run(ISENGARD + [f"--config={path}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert "//" in text and '"HttpPort"' in text
    # The written file is the configuration of a server that starts (ports and folder changed).
    folder = tmp_path / "server"
    folder.mkdir()
    with running_isengard(folder, Name="FromDefaults") as server:
        assert server.client.get("/system").json()["Name"] == "FromDefaults"


def test_malformed_configuration_stops_start_up_naming_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  // a comment\n  "HttpPort": 8042,\n  "Name": oops\n}\n')
    result = subprocess.run(ISENGARD + [str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert str(path) in result.stderr and "line 4" in result.stderr


def test_unknown_options_are_logged_and_ignored(tmp_path):
    folder = tmp_path / "server"
    folder.mkdir()
    with running_isengard(folder, NoSuchOption=True) as server:
        assert server.client.get("/system").status_code == 200
        assert "NoSuchOption" in server.log()


def test_configuration_folder_is_merged(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    port = free_port()
    (folder / "a.json").write_text(json.dumps({"Name": "Merged", "StorageDirectory": str(tmp_path / "db")}))
    (folder / "b.json").write_text(f'{{ /* the ports */ "HttpPort": {port}, "DicomPort": {free_port()} }}')
    process = subprocess.Popen(ISENGARD + [str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/system").json()["Name"] == "Merged"
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(10)


def test_environment_overrides_are_type_checked(tmp_path):
    env = {**os.environ, "ISENGARD__HttpPort": "notaport"}
    result = subprocess.run(ISENGARD, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 2 and "HttpPort" in result.stderr


def test_relative_folders_start_from_the_configuration_file(tmp_path):
    from isengard.config import load_configuration

    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "isengard.json"
    path.write_text('{ "StorageDirectory": "images", "IndexDirectory": "/absolute/index" }')
    config = load_configuration(path)
    assert config.storage_directory == tmp_path / "conf" / "images"
    assert config.index_directory == Path("/absolute/index")


def test_dicom_port_in_use_stops_start_up_with_a_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        dicom_port = taken.getsockname()[1]
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"StorageDirectory": str(tmp_path / "db"), "HttpPort": free_port(), "DicomPort": dicom_port}))
        result = subprocess.run(ISENGARD + [str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"Cannot listen on DicomPort {dicom_port}" in result.stderr and "Traceback" not in result.stderr


def start_server(tmp_path: Path, **popen) -> tuple[subprocess.Popen, int]:
    path = tmp_path / "config.json"
    port = free_port()
    path.write_text(json.dumps({"StorageDirectory": str(tmp_path / "db"), "HttpPort": port, "DicomPort": free_port()}))
    process = subprocess.Popen(ISENGARD + [str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/system")
            return process, port
        except httpx.TransportError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)


def test_sigterm_closes_the_server_before_exiting(tmp_path):
    """Closing writes the index's last state: a clean stop leaves no SQLite write-ahead log behind."""
    process, _ = start_server(tmp_path)
    process.terminate()
    assert process.wait(30) == 0
    assert not list((tmp_path / "db").glob("*-wal"))


def test_ctrl_c_stops_the_server_and_its_writer_processes_quietly(tmp_path):
    """Ctrl+C reaches the whole process group of a terminal: the server stops cleanly, and its
    writer processes (storage) end with it, without a traceback."""
    process, port = start_server(tmp_path, start_new_session=True)  # a group of its own, as in a terminal
    stored = httpx.post(f"http://127.0.0.1:{port}/instances", content=sample("DummyCT.dcm").read_bytes())
    assert stored.status_code == 200  # which started a writer process
    writers = child_pids(process.pid)
    assert writers
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(30) == 0
    assert "Traceback" not in process.stderr.read().decode()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in writers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in writers)

