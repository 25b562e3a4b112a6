"""Multi-process training with torchrun on CPU (gloo): the same entry point runs on 1 or N processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("_ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", RECURSIONLAB_PROGRESS="0")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def test_two_gloo_ranks_match_single_process(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(WORKER), str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "single")], env=_env(),
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]

    r0, r1 = (json.loads((tmp_path / f"ddp.{r}.json").read_text()) for r in (0, 1))
    one = json.loads((tmp_path / "single.0.json").read_text())
    assert r0["world"] == 2 and one["world"] == 1
    # DDP keeps the replicas identical...
    np.testing.assert_array_equal(np.array(r0["params"]), np.array(r1["params"]))
    # ...and two ranks over halves of the global batch take the same steps as one process over all of it.
    np.testing.assert_allclose(r0["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r0["params"], one["params"], rtol=1e-4, atol=1e-6)
