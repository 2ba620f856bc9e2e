"""``python -m data_pipelines.show``: grid size, tiles equal to the decoded images away from the
drawn box and landmarks, map panels, label text, a geometric pipe, SALICON fixations, errors."""

import contextlib
import io
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines import show
from tests.data_pipelines.datasets import salicon_test

GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  build.build("synthetic_faces", "small", data_dir=d)
  return d


def _records_by_id(data_dir: str, split: str) -> dict[str, dict]:
  builder = tfds.builder("synthetic_faces/small", data_dir=data_dir)
  source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding(),
                                                   "saliency": tfds.decode.SkipDecoding()})
  return {r["id"].decode(): r for r in (source[i] for i in range(len(source)))}


def _rgb(data: bytes) -> np.ndarray:
  return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                      cv2.COLOR_BGR2RGB)


def _read_png(path: str) -> np.ndarray:
  return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _check_image_tile(tile: np.ndarray, image: np.ndarray, box: np.ndarray) -> None:
  """``tile`` equals ``image`` except on and inside the drawn box (landmarks lie inside it, their
  dots reach 2 px out); the box's top edge is green."""
  x1, y1, x2, y2 = np.round(box).astype(int)
  drawn = np.zeros(image.shape[:2], bool)
  drawn[max(y1 - 3, 0):y2 + 4, max(x1 - 3, 0):x2 + 4] = True
  assert drawn.mean() < 0.6  # most of the tile is compared
  np.testing.assert_array_equal(tile[~drawn], image[~drawn])
  assert tuple(tile[y1, (x1 + x2) // 2]) == GREEN
  assert not np.array_equal(tile[drawn], image[drawn])


def test_cli_writes_the_grid_and_tiles_match_the_decoded_images(data_dir, tmp_path):
  out = str(tmp_path / "grid.png")
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    assert show.main(["synthetic_faces", "--config", "small", "--data_dir", data_dir,
                         "--num", "4", "--out", out]) == 0
  assert printed.getvalue() == (f"wrote {out} (4 examples of synthetic_faces/small train, "
                                "1044x592)\n")
  grid = _read_png(out)
  # 2 x 2 cells; a cell = image 256 + gap 4 + map 256 wide, image 256 + 2 text lines (2 * 14 + 6)
  # high; 4 px gaps around and between cells.
  assert grid.shape == (4 + 2 * (256 + 34 + 4), 4 + 2 * (256 + 4 + 256 + 4), 3) == (592, 1044, 3)
  result = show.show("synthetic_faces", "small", data_dir=data_dir, num=4,
                           out=str(tmp_path / "again.png"))
  np.testing.assert_array_equal(_read_png(result["path"]), grid)  # same seed, same grid
  records = _records_by_id(data_dir, "train")
  assert len(set(result["ids"])) == 4 and set(result["ids"]) <= set(records)
  for k, eid in enumerate(result["ids"]):
    top, left = 4 + (k // 2) * 294, 4 + (k % 2) * 520
    r = records[eid]
    _check_image_tile(grid[top:top + 256, left:left + 256], _rgb(r["image"]), r["box"])
    saliency = cv2.imdecode(np.frombuffer(r["saliency"], np.uint8), cv2.IMREAD_GRAYSCALE)
    jet = cv2.cvtColor(cv2.applyColorMap(saliency, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(grid[top:top + 256, left + 260:left + 516], jet)
    strip = grid[top + 256:top + 290, left:left + 516]
    assert (strip != 40).any()  # text on the strip below the tiles
    assert (grid[top + 256:top + 294, left + 516:left + 520] == 40).all()  # not beyond the cell


def test_a_geometric_pipe_moves_the_drawn_box(data_dir, tmp_path):
  result = show.show("synthetic_faces", "small", split="validation", data_dir=data_dir,
                           num=1, pipe="decode|center_crop(200)", seed=3,
                           out=str(tmp_path / "crop.png"))
  grid = _read_png(result["path"])
  assert grid.shape == (4 + 200 + 34 + 4, 4 + 200 + 4 + 200 + 4, 3)
  r = _records_by_id(data_dir, "validation")[result["ids"][0]]
  # center_crop(200) of 256 x 256 keeps rows and columns 28..227: the box moves by -28.
  _check_image_tile(grid[4:204, 4:204], _rgb(r["image"])[28:228, 28:228], r["box"] - 28)


def test_stacked_views_get_a_cell_each(data_dir, tmp_path):
  result = show.show("synthetic_faces", "small", split="test", data_dir=data_dir, num=10,
                           pipe="decode|oversample10(200)", out=str(tmp_path / "views.png"))
  eid = result["ids"][0].split(" ")[0]
  assert result["ids"] == [f"{eid} [{k}/10]" for k in range(1, 11)]
  grid = _read_png(result["path"])
  # 4 columns x 3 rows of cells: 200 + 4 + 200 wide, 200 + 34 high.
  assert grid.shape == (4 + 3 * (200 + 34 + 4), 4 + 4 * (404 + 4), 3)
  r = _records_by_id(data_dir, "test")[eid]
  image = _rgb(r["image"])
  x1, y1, x2, y2 = r["box"]
  # View 1: the top-left window, as it is; view 6: its mirror (x -> 199 - x).
  _check_image_tile(grid[4:204, 4:204], image[:200, :200], r["box"])
  top, left = 4 + 238, 4 + 408  # row 1, column 1
  _check_image_tile(grid[top:top + 200, left:left + 200], image[:200, :200][:, ::-1],
                    np.array([199 - x2, y1, 199 - x1, y2]))


def test_label_parts_and_wrapping(data_dir):
  features = tfds.builder("synthetic_faces/small", data_dir=data_dir).info.features
  example = {"age": 4, "gender": 1, "expression": 1, "id": b"synthetic/000001",
             "box": np.zeros(4, np.float32), "saliency": np.zeros((2, 2), np.uint8)}
  parts = show.label_parts(example, features)
  assert parts == ["age 25-32", "gender f", "expression Happy"]
  assert show.wrap(parts, 1000) == ["age 25-32 | gender f | expression Happy"]
  assert show.wrap(parts, 1) == parts
  other = tfds.features.FeaturesDict({
      "num_workers": tfds.features.Tensor(shape=(), dtype=np.int32),
      "fixations": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
      "score": tfds.features.Tensor(shape=(), dtype=np.float32),
      "id": tfds.features.Text()})
  assert show.label_parts({"num_workers": np.int32(3), "fixations": np.zeros((2, 2)),
                              "score": np.float32(0.5), "id": b"x"}, other) == [
                                  "num_workers 3", "fixations 2", "score 0.5"]


def test_salicon_fixations_are_dotted_on_the_map(tmp_path):
  manual = str(tmp_path / "manual")
  files = salicon_test.make_tree(manual)
  d = str(tmp_path / "tfds")
  build.build("salicon", "png", data_dir=d, manual_dir=manual)
  result = show.show("salicon", data_dir=d, split="validation", num=16,
                           out=str(tmp_path / "s.png"))
  assert result["ids"] == ["COCO_val2014_000000000010"] and result["config"] == "png"
  grid = _read_png(result["path"])
  h, w = salicon_test.H, salicon_test.W
  # The 68 px cell fits one label part per line: id, "fixations 3", "num_workers 3".
  assert grid.shape[:2] == (4 + h + 3 * 14 + 6 + 4, 4 + w + 4 + w + 4)
  features = tfds.builder("salicon/png", data_dir=d).info.features
  record = {"fixations": np.zeros((3, 2), np.float32), "num_workers": 3, "id": b"x"}
  assert show.label_parts(record, features) == ["fixations 3", "num_workers 3"]
  image = _rgb(files["images/val/COCO_val2014_000000000010.jpg"])
  np.testing.assert_array_equal(grid[4:4 + h, 4:4 + w], image)  # no box or landmarks here
  panel = grid[4:4 + h, 8 + w:8 + 2 * w]
  white = np.argwhere((panel == 255).all(axis=2))
  # Fixations [3, 4], [30, 20], [0.5, 22.5] index pixels (row y, column x) = (4, 3), (20, 30),
  # (22, 0); the JET colour map itself never gives pure white.
  assert sorted(map(tuple, white)) == [(4, 3), (20, 30), (22, 0)]


def test_not_prepared_unknown_split_and_bad_arguments(data_dir, tmp_path, capsys):
  empty = str(tmp_path / "empty")
  with pytest.raises(SystemExit) as e:
    show.main(["synthetic_faces", "--config", "small", "--data_dir", empty])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert (f"synthetic_faces/small is not prepared in {empty}; run: python -m "
          f"data_pipelines.build synthetic_faces --config small --data_dir {empty}") in err
  with pytest.raises(show.ShowError, match="unknown dataset 'no_such_set': not prepared in "
                     ".*adience, affectnet, celeba"):
    show.show("no_such_set", data_dir=empty)
  with pytest.raises(show.ShowError,
                     match="has no split 'val'; splits: train, validation, test"):
    show.show("synthetic_faces", "small", split="val", data_dir=data_dir)
  with pytest.raises(show.ShowError, match="unknown config 'big'"):
    show.show("synthetic_faces", "big", data_dir=data_dir)
  with pytest.raises(show.ShowError, match="--num must be >= 1"):
    show.show("synthetic_faces", "small", data_dir=data_dir, num=0)
  assert not os.path.exists(empty) or not os.listdir(empty)
