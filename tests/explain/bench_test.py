"""The explain benchmark runs end to end on a tiny AlexNet and reports positive rates."""

import json

from jaxface.explain import bench


def test_bench_tiny_alexnet(capsys):
  rc = bench.main(["--model", "alexnet", "--width", "0.0625", "--size", "64", "--batch", "2",
                   "--patch", "5", "--vertices", "64", "--min_seconds", "0", "--json"])
  assert rc == 0
  r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert r["gradcam_maps_per_s"] > 0 and r["cis_maps_per_s"] > 0
  assert r["torch_hook_gradcam_maps_per_s"] > 0
  assert r["cis_vertices"] == 64  # 64 / sqrt(64) = grid 8: an 8 x 8 vertex grid.
