"""A real MONAI Label server with the app, over HTTP (runs in the MONAI Label environment; skipped elsewhere).

``.ci/run`` builds that environment (``constraints/make_monailabel_env.sh``) and runs this file there. The server
is started once for the module on 127.0.0.1 with a studies folder written here, and stopped at the end even when
a test fails.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_medspike.apps.monailabel import MODELS, app_dir
from monai_medspike.workflows import trained_epochs
from tests.apps.studies import AFFINE, export_bundles, make_studies, needs_2d_label, segment, write_weights

pytest.importorskip("monailabel", reason="monailabel is installed only in the MONAI Label environment")
requests = pytest.importorskip("requests")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 600
#: how much the server's resident memory may grow over 20 requests after two warm-up requests
MEMORY_GROWTH_BOUND_MIB = 100


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = make_studies(root)
        self.output_root = root / "outputs"
        self.bundles = export_bundles(root, list(MODELS))  # training publishes into them, not into the checkout
        self.weights = {name: write_weights(self.bundles / name) for name in ("kvasir", "covid")}  # initial weights
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        # a copy of the app folder, as `python -m monai_medspike.apps.monailabel <folder>` writes it: MONAI Label
        # writes logs/ and model/ into the app folder, and the checkout stays untouched
        made = subprocess.run(
            [sys.executable, "-m", "monai_medspike.apps.monailabel", str(root / "app")], capture_output=True, text=True
        )
        assert made.returncode == 0, made.stderr
        self.app = Path(made.stdout.strip())
        env = dict(os.environ)
        # the monailabel launcher runs `python -m monailabel.main`: this environment's python must come first
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        command = [
            str(Path(sys.executable).parent / "monailabel"), "start_server", "--app", str(self.app),
            "--studies", str(root / "studies"), "--conf", "models", "all", "--conf", "bundles", str(self.bundles),
            "--conf", "output_root", str(self.output_root), "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
            )

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise RuntimeError(f"the server did not answer within {START_TIMEOUT_S} s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def infer(self, model: str, file: Path, output: str = "image") -> requests.Response:
        with open(file, "rb") as f:
            return requests.post(
                f"{self.url}/infer/{model}", params={"output": output}, files={"file": (file.name, f)},
                timeout=REQUEST_TIMEOUT_S,
            )  # fmt: skip

    def rss_mib(self) -> float:
        proc = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("monailabel_server"))
    try:
        srv.wait_until_up()
        yield srv
    finally:
        srv.stop()
    assert srv.process.poll() is not None


def up(server: Server) -> None:
    """The server still answers after an error."""
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200


def test_info_lists_the_trained_models_and_all_trainers(server):
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    assert list(info["models"]) == ["covid", "kvasir"]  # those with models/model.pt
    assert list(info["trainers"]) == list(MODELS)
    assert list(info["untrained"]) == ["busi", "isic2018", "monuseg"]
    assert "POST /train/busi" in info["untrained"]["busi"]
    assert info["models"]["covid"]["dimension"] == 3 and info["models"]["kvasir"]["dimension"] == 2
    assert info["models"]["covid"]["labels"] == {"infection": 1}
    assert info["models"]["kvasir"]["labels"] == {"polyp": 1}
    assert info["trainers"]["kvasir"]["config"]["max_epochs"] == 10  # the bundle's epochs per phase
    assert "pretrained" not in info["trainers"]["kvasir"]["config"]


def test_covid_volume_returns_a_label_volume_with_its_shape_and_affine(server, tmp_path):
    response = server.infer("covid", server.paths["chest0"])
    assert response.status_code == 200, response.text
    (tmp_path / "label.nii.gz").write_bytes(response.content)
    label, source = nib.load(tmp_path / "label.nii.gz"), nib.load(server.paths["chest0"])
    assert label.shape == source.shape and label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(label.affine, AFFINE, atol=1e-4)
    expected = np.asarray(segment(server.bundles / "covid", server.paths["chest0"])).reshape(source.shape)
    np.testing.assert_array_equal(np.asarray(label.dataobj), expected)  # the bundle's own inference
    params = server.infer("covid", server.paths["chest0"], output="json").json()
    assert params["label_names"] == {"background": 0, "infection": 1}
    assert params["model_path"] == str(server.weights["covid"])


@needs_2d_label
def test_kvasir_image_returns_a_png_mask_of_its_size(server):
    response = server.infer("kvasir", server.paths["polyp0"])
    assert response.status_code == 200, response.text
    mask = Image.open(io.BytesIO(response.content))
    assert mask.format == "PNG" and mask.size == Image.open(server.paths["polyp0"]).size
    expected = np.asarray(segment(server.bundles / "kvasir", server.paths["polyp0"])).reshape(mask.size)
    np.testing.assert_array_equal(np.asarray(mask), expected.T)  # (width, height) array, (height, width) image
    assert set(np.unique(np.asarray(mask))) <= {0, 1}


def test_twenty_sequential_requests_give_identical_results_and_bounded_memory(server):
    def mask() -> np.ndarray:
        response = server.infer("kvasir", server.paths["polyp1"])
        assert response.status_code == 200, response.text
        return np.asarray(Image.open(io.BytesIO(response.content)))

    first = [mask(), mask()]
    before = server.rss_mib()
    results = [mask() for _ in range(20)]
    growth = server.rss_mib() - before
    assert all(np.array_equal(r, first[0]) for r in [*first, *results])
    assert growth < MEMORY_GROWTH_BOUND_MIB, f"server memory grew by {growth:.0f} MiB over 20 requests"


def test_malformed_requests_get_clear_errors_and_the_server_keeps_serving(server, tmp_path):
    response = server.infer("spleen", server.paths["polyp0"])
    assert response.status_code == 404 and "unknown model 'spleen'" in response.json()["detail"]
    assert "kvasir" in response.json()["detail"]
    up(server)

    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"this is not a PNG file" * 20)
    response = server.infer("kvasir", garbage)
    assert response.status_code == 422
    assert "model kvasir: the input could not be segmented" in response.json()["detail"]
    assert "cannot be read as an image" in response.json()["detail"]  # the file named, by the one image reader
    up(server)

    deep = tmp_path / "deep.png"  # a user's error: answered in its one line (the commands' own), no traceback logged
    Image.fromarray(np.full((40, 48), 40000, np.uint16)).save(deep)
    logged = len(server.log.read_text(errors="replace"))
    response = server.infer("kvasir", deep)
    assert response.status_code == 422 and "16-bit" in response.json()["detail"], response.text
    assert "Traceback" not in server.log.read_text(errors="replace")[logged:]
    up(server)

    two_channels = tmp_path / "two_channels.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 4, 2), np.int16), AFFINE), two_channels)
    response = server.infer("covid", two_channels)
    assert response.status_code == 422
    assert "single-channel CT volume, got 2 channels" in response.json()["detail"]
    up(server)

    response = server.infer("busi", server.paths["polyp0"])  # served but never trained
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "model busi is not trained yet" in detail and str(server.bundles / "busi" / "models" / "model.pt") in detail
    assert "POST /train/busi" in detail and "python -m monai.bundle run training" in detail

    response = requests.post(f"{server.url}/train/spleen", params={"run_sync": True}, json={}, timeout=60)
    assert response.status_code == 404 and "unknown model 'spleen'" in response.json()["detail"]
    response = requests.post(
        f"{server.url}/train/kvasir", params={"run_sync": True}, json={"pretrained": False}, timeout=60
    )
    assert response.status_code == 422 and "pretrained=false is not supported" in response.json()["detail"]
    assert server.infer("kvasir", server.paths["polyp0"]).status_code == 200


def test_training_from_monailabel_publishes_the_model_the_next_infer_uses(server):
    before = server.weights["kvasir"].read_bytes()
    response = requests.post(
        f"{server.url}/train/kvasir", params={"run_sync": True}, json={"max_epochs": 1},
        timeout=REQUEST_TIMEOUT_S,
    )  # fmt: skip
    assert response.status_code == 200, f"{response.text}\n{server.tail()}"
    result = response.json()
    assert result == {"model": "kvasir", "checkpoint": str(server.weights["kvasir"]), "published": True}
    assert server.weights["kvasir"].read_bytes() != before
    # the runs go to --conf output_root; the 2D model was given the three polyp images, not the CT volume
    runs = sorted(p.name.split("-")[0] for p in (server.output_root / "kvasir").iterdir())
    assert runs == ["student", "teacher"]
    assert "Restored all variables from" in server.log.read_text()  # the student started from models/model.pt
    for phase in ("teacher", "student"):  # MONAI Label's max_epochs, one epoch per phase
        (last,) = (server.output_root / "kvasir").glob(f"{phase}-*/last.pt")
        assert trained_epochs(torch.load(last, weights_only=True))[0] == 1
    params = server.infer("kvasir", server.paths["polyp0"], output="json").json()
    assert params["model_path"] == str(server.weights["kvasir"])
    assert server.infer("kvasir", server.paths["polyp0"]).status_code == 200


def test_a_model_is_served_once_its_model_pt_appears_and_refused_once_it_is_gone(tmp_path):
    """The app in this process: no weights -> 409; weights written (by any training) -> served; removed -> 409."""
    from fastapi import HTTPException

    from monai_medspike.apps.monailabel.app import MedSpikeApp

    make_studies(tmp_path, polyps=1)
    bundles = export_bundles(tmp_path, ["covid"])
    conf = {"models": "covid", "bundles": str(bundles), "skip_trainers": "true"}
    app = MedSpikeApp(str(app_dir()), str(tmp_path / "studies"), conf)
    assert app.info()["models"] == {} and list(app.info()["untrained"]) == ["covid"]
    with pytest.raises(HTTPException) as err:
        app.infer({"model": "covid", "image": "chest0", "device": "cpu"})
    assert err.value.status_code == 409 and "covid is not trained yet" in err.value.detail

    model = write_weights(bundles / "covid", {"image_size": [32, 32]})
    assert list(app.info()["models"]) == ["covid"]
    result = app.infer({"model": "covid", "image": "chest0", "device": "cpu"})
    assert result["params"]["model_path"] == str(model)
    assert nib.load(result["file"]).shape == nib.load(tmp_path / "studies" / "chest0.nii.gz").shape

    model.unlink()  # never fall back to the network's initial weights
    with pytest.raises(HTTPException) as err:
        app.infer({"model": "covid", "image": "chest0", "device": "cpu"})
    assert err.value.status_code == 409 and str(model) in err.value.detail


def test_multiclass_covid_app_carries_its_three_label_names(tmp_path):
    """A three-class model trained with ``classes multiclass``: the app (in this process) reads that from the
    checkpoint and labels ground-glass and consolidation, without a ``--conf`` for it."""
    from monai_medspike.apps.monailabel.app import MedSpikeApp, MedSpikeTrainTask

    paths = make_studies(tmp_path, polyps=1)
    bundles = export_bundles(tmp_path, ["covid"])
    overrides = {"classes": "multiclass", "image_size": [32, 32]}
    write_weights(bundles / "covid", overrides)  # weights of the three-class network, and their record
    conf = {"models": "covid", "bundles": str(bundles), "skip_trainers": "true"}
    app = MedSpikeApp(str(app_dir()), str(tmp_path / "studies"), conf)
    assert app.info()["models"]["covid"]["labels"] == {"ground-glass": 1, "consolidation": 2}
    result = app.infer({"model": "covid", "image": "chest0", "device": "cpu"})
    assert result["params"]["label_names"] == {"background": 0, "ground-glass": 1, "consolidation": 2}
    label = nib.load(result["file"])
    assert label.shape == nib.load(paths["chest0"]).shape
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2}
    # a training that starts from the served model keeps what it is (from its record); --conf output_root moves
    # only its run folders
    trainer = MedSpikeTrainTask("covid", bundles / "covid", {**conf, "output_root": str(tmp_path / "runs")})
    kept = trainer.model_overrides()
    assert {k: kept[k] for k in overrides} == overrides and kept["label_names"] == list(result["params"]["label_names"])
    assert trainer.overrides == {"output_root": str(tmp_path / "runs" / "covid")}
    assert trainer.bundle_config.get_parsed_content("ckpt_dir") == str(bundles / "covid" / "models")


def test_the_app_serves_the_network_its_weights_were_trained_as_and_follows_a_new_one(tmp_path):
    """Weights of the spike-driven network at 32 x 32: the app builds that network and preprocessing from the
    checkpoint's record (no ``--conf`` repeats them); a model published later with other settings is followed at the
    next request; a ``--conf`` that contradicts the checkpoint makes the model unservable, saying why."""
    from fastapi import HTTPException

    from monai_medspike.apps.monailabel.app import MedSpikeApp

    paths = make_studies(tmp_path, polyps=1)
    bundles = export_bundles(tmp_path, ["kvasir"])
    write_weights(bundles / "kvasir", {"layout": "spike_driven", "image_size": [32, 32]})
    conf = {"models": "kvasir", "bundles": str(bundles), "skip_trainers": "true"}
    app = MedSpikeApp(str(app_dir()), str(tmp_path / "studies"), conf)
    result = app.infer({"model": "kvasir", "image": "polyp0", "device": "cpu"})
    assert app.infer_tasks["kvasir"]._networks["cpu"][0].layout == "spike_driven"
    mask = Image.open(result["file"])
    assert mask.size == Image.open(paths["polyp0"]).size
    expected = np.asarray(segment(bundles / "kvasir", paths["polyp0"])).reshape(mask.size)
    np.testing.assert_array_equal(np.asarray(mask), expected.T)

    time.sleep(0.01)  # a new modification time
    write_weights(bundles / "kvasir", {"image_size": [48, 48], "time_steps": 2}, logit=-5.0)  # published later
    result = app.infer({"model": "kvasir", "image": "polyp0", "device": "cpu"})
    network = app.infer_tasks["kvasir"]._networks["cpu"][0]
    assert network.layout == "published" and network.time_steps == 2
    assert app.infer_tasks["kvasir"].bundle_config.get_parsed_content("image_size") == [48, 48]
    assert not np.asarray(Image.open(result["file"])).any()  # the new weights: background everywhere

    contradicting = {**conf, "kvasir.time_steps": "4"}
    app = MedSpikeApp(str(app_dir()), str(tmp_path / "studies"), contradicting)
    with pytest.raises(HTTPException) as err:
        app.infer({"model": "kvasir", "image": "polyp0", "device": "cpu"})
    assert err.value.status_code == 409
    assert "--time_steps 4 contradicts the checkpoint" in err.value.detail and "time_steps 2" in err.value.detail


def test_kvasir_app_serves_bfloat16_mixed_precision(tmp_path):
    """``--conf kvasir.precision bfloat16``: the app serves the network in mixed precision, with the masks of the
    bundle's own inference in mixed precision."""
    from monai_medspike.apps.monailabel.app import MedSpikeApp

    paths = make_studies(tmp_path, polyps=1)
    bundles = export_bundles(tmp_path, ["kvasir"])
    write_weights(bundles / "kvasir", {"image_size": [32, 32]})
    conf = {"models": "kvasir", "bundles": str(bundles), "kvasir.precision": "bfloat16", "skip_trainers": "true"}
    app = MedSpikeApp(str(app_dir()), str(tmp_path / "studies"), conf)
    result = app.infer({"model": "kvasir", "image": "polyp0", "device": "cpu"})
    assert app.infer_tasks["kvasir"]._networks["cpu"][0].precision == "bfloat16"
    mask = Image.open(result["file"])
    expected = np.asarray(segment(bundles / "kvasir", paths["polyp0"], {"precision": "bfloat16"})).reshape(mask.size)
    np.testing.assert_array_equal(np.asarray(mask), expected.T)


def test_app_builds_the_lif_kernel_at_start_and_serves_the_folded_channels_last_network(tmp_path, monkeypatch):
    """The app compiles the LIF kernel when it starts (not inside the first /infer), and its infer task serves the
    bundle's CPU inference path (batch norms folded into the convolutions, channels-last) with the masks of the
    plain network (no folding, default layout)."""
    import torch.nn as nn

    from monai_medspike.apps.monailabel.app import MedSpikeApp
    from monai_medspike.networks.layers import lif_kernel

    if lif_kernel.find_compiler() is None:
        pytest.skip("no C compiler to build the LIF kernel")
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # a fresh machine: nothing built yet
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    monkeypatch.setattr(lif_kernel, "_state", {})
    paths = make_studies(tmp_path, polyps=1)
    bundles = export_bundles(tmp_path, ["kvasir"])
    write_weights(bundles / "kvasir", {"image_size": [32, 32]})
    conf = {"models": "kvasir", "bundles": str(bundles), "skip_trainers": "true"}
    app = MedSpikeApp(str(app_dir()), str(tmp_path / "studies"), conf)
    assert len(list((cache / "monai_medspike").glob("lif_kernel-*.so"))) == 1  # before any request
    before = lif_kernel.calls["forward"]
    result = app.infer({"model": "kvasir", "image": "polyp0", "device": "cpu"})
    assert lif_kernel.calls["forward"] > before  # the request ran on the kernel built at start
    network = app.infer_tasks["kvasir"]._networks["cpu"][0]
    assert network.channels_last and not network.training
    assert not any(
        isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)
        for m in network.modules() if isinstance(m, nn.Sequential) for a, b in zip(m, list(m)[1:], strict=False)
    )  # fmt: skip
    mask = Image.open(result["file"])
    plain = {"channels_last": False}  # segment() folds nothing
    expected = np.asarray(segment(bundles / "kvasir", paths["polyp0"], plain)).reshape(mask.size)
    np.testing.assert_array_equal(np.asarray(mask), expected.T)
