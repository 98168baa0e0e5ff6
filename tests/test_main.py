"""The command line (snnexp/__main__.py): under multirun a refused job is reported with its number and the sweep goes on."""

import json

from helpers.runs import SHORT, run_cli


def test_a_refused_job_does_not_stop_the_rest_of_a_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "model=vggsnn_pool,convnet", *SHORT[:-1], "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "snnexp: error in job 0: model vggsnn_pool cannot be built" in proc.stderr
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "completed"
