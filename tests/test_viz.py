"""Tests of aae_tract.viz (FURY pictures), aae_tract.plots (matplotlib figures)
and aae_tract.colors (bundle colours)."""

import importlib.util
import logging
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from aae_tract import plots, viz
from aae_tract.annotate import side_width
from aae_tract.errors import TractogramError

# ----------------------------------------------------------------------------
# helpers and fixtures
# ----------------------------------------------------------------------------


def _image(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _assert_not_blank(path, *, min_std=8.0, min_colours=20):
    """A picture with real content: varied pixels and many distinct colours."""
    img = _image(path)
    assert img.std() > min_std, f"{path} looks blank (pixel std {img.std():.1f})"
    n_colours = len(np.unique(img.reshape(-1, 3), axis=0))
    assert n_colours >= min_colours, f"{path} has only {n_colours} colours"
    return img


def _pixels_near(img, rgb, tol=40):
    """Number of pixels within ``tol`` (per channel) of a [0, 1] RGB colour."""
    target = np.round(np.asarray(rgb) * 255).astype(int)
    return int(np.all(np.abs(img - target) <= tol, axis=-1).sum())


def _content_box(img, background=255, tol=10):
    """Bounding box (rows, cols) of pixels that are not background."""
    mask = np.any(np.abs(img - background) > tol, axis=-1)
    rows, cols = np.nonzero(mask)
    return rows.min(), rows.max(), cols.min(), cols.max()


def _arcs(n, center, radius, *, seed, n_points=60):
    rng = np.random.default_rng(seed)
    s = np.linspace(0, np.pi, n_points)
    out = []
    for _ in range(n):
        r = radius + rng.normal(0, 2)
        x = np.full_like(s, center[0] + rng.normal(0, 2))
        y = center[1] + r * np.cos(s)
        z = center[2] + r * np.sin(s) + rng.normal(0, 1)
        out.append(np.c_[x, y, z].astype(np.float32))
    return out


def _helices(n, center, *, seed, n_points=80):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, n_points)
    return [
        np.c_[
            center[0] + 8 * np.cos(t) + rng.normal(0, 1),
            center[1] + 8 * np.sin(t) + rng.normal(0, 1),
            center[2] + 5 * t,
        ].astype(np.float32)
        for _ in range(n)
    ]


@pytest.fixture
def synthetic_bundles():
    return {
        "AF_L": _arcs(40, (-35, 0, 0), 45, seed=0),
        "CST_L": _helices(30, (-20, -10, -40), seed=1),
    }


@pytest.fixture(scope="module")
def af_l_sft(tmp_path_factory):
    """AF_L of subject 1 from DIPY's shipped minimal_bundles.zip."""
    from dipy.data import get_fnames
    from dipy.io.streamline import load_tractogram

    folder = tmp_path_factory.mktemp("minimal_bundles")
    with zipfile.ZipFile(get_fnames(name="minimal_bundles")) as archive:
        archive.extract("sub_1/AF_L.trk", folder)
    return load_tractogram(
        str(folder / "sub_1" / "AF_L.trk"), "same", bbox_valid_check=False
    )


@pytest.fixture
def renderer_ready():
    problem = viz.adapter_problem()
    if problem:
        pytest.skip(f"FURY cannot render on this machine: {problem}")


def _no_temp_files(folder):
    leftovers = [p.name for p in folder.iterdir() if ".tmp" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"


# ----------------------------------------------------------------------------
# bundle colours
# ----------------------------------------------------------------------------


def test_bundle_colors_stable_and_independent_of_other_names():
    a = viz.bundle_colors(["AF_L", "CST_R", "CC_ForcepsMajor"])
    b = viz.bundle_colors(["CC_ForcepsMajor", "zzz_new", "AF_L"])
    assert a["AF_L"] == b["AF_L"]
    assert a["CC_ForcepsMajor"] == b["CC_ForcepsMajor"]
    assert viz.bundle_colors("CST_R") == {"CST_R": a["CST_R"]}
    for rgb in [*a.values(), *b.values()]:
        assert len(rgb) == 3
        assert all(0.0 <= c <= 1.0 for c in rgb)
    # the three bundles of the embedded default are clearly different colours
    colours = np.array(list(a.values()))
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert distances[np.triu_indices(3, 1)].min() > 0.3


def test_other_streamlines_are_grey_in_every_picture():
    from aae_tract.label import OTHER

    np.testing.assert_allclose(viz.bundle_colors(OTHER)[OTHER], (0.6, 0.6, 0.6))


def test_generated_files_take_their_bundles_colour():
    """aae_tract_render of aae_tract_generate's files draws them in their
    bundle's colour, as every other picture does."""
    colors = viz.bundle_colors(
        ["AF_L", "CST_R", "UF_L", "AF_L_length130", "CST_R_age42.5", "UF_L_length45"]
    )
    assert colors["AF_L_length130"] == colors["AF_L"]
    assert colors["CST_R_age42.5"] == colors["CST_R"]
    assert colors["UF_L_length45"] == colors["UF_L"]
    # other names keep their own colour
    others = viz.bundle_colors(["AF_L_lengthy", "AF_L_v2", "length80"])
    assert others["AF_L_lengthy"] != colors["AF_L"]
    assert others["AF_L_v2"] != colors["AF_L"]


def test_bundle_colors_do_not_depend_on_python_hash_seed():
    # names outside the table are coloured from a CRC32 of the name: fixed
    # numbers, the same in every process whatever PYTHONHASHSEED is
    colour = viz.bundle_colors(["my_bundle"])["my_bundle"]
    np.testing.assert_allclose(
        colour, viz.bundle_colors(["other", "my_bundle"])["my_bundle"]
    )
    np.testing.assert_allclose(colour, (0.1591, 0.1799, 0.639), atol=1e-3)
    assert viz.bundle_colors(["x_L"])["x_L"] != viz.bundle_colors(["y_L"])["y_L"]


def test_the_all_bundles_bar_is_no_bundles_colour(tmp_path, monkeypatch):
    """The evaluation figure's first bar (mean or worst over the bundles)
    stands apart from every bundle's bar: no named bundle, left or right,
    and no name coloured from its hash comes near its colour."""
    from matplotlib.colors import to_rgb

    from aae_tract import colors

    named = [*colors._EXACT_COLORS, *colors._FAMILY_COLORS]
    names = named + [f"{n}_{side}" for n in named for side in "LR"]
    names += [f"bundle_{i}" for i in range(500)]
    colours = np.array(list(viz.bundle_colors(names).values()))
    overall = np.array(to_rgb(plots._MODEL_COLOR))
    assert np.linalg.norm(colours - overall, axis=1).min() > 0.3
    # and it is the colour the figure gives that bar
    metrics = {"recon_mdf_mm": 1.0, "per_bundle": {"CST_L": {"recon_mdf_mm": 1.0}}}
    groups = plots._metric_groups("recon_mdf_mm", metrics, {})
    assert groups[0][0] == "mean" and groups[0][3] == plots._MODEL_COLOR
    assert groups[1][3] == viz.bundle_colors(["CST_L"])["CST_L"]

    # the figure draws its bars with them
    drawn, bar = [], plots._bar

    def recorded(ax, x, value, width, **style):
        drawn.append(style.get("color"))
        return bar(ax, x, value, width, **style)

    monkeypatch.setattr(plots, "_bar", recorded)
    plots.plot_evaluation(metrics, tmp_path / "eval.png")
    assert drawn == [plots._MODEL_COLOR, groups[1][3]]


def _arc(centre, axes, n=20, radius=40.0):
    """Streamlines along a half circle in the plane of two axes, about
    ``centre``, a little apart along the third."""
    t = np.linspace(0, np.pi, 30)
    lines = []
    for k in range(n):
        p = np.zeros((30, 3)) + centre
        p[:, axes[0]] += radius * np.cos(t)
        p[:, axes[1]] += radius * np.sin(t)
        p[:, 3 - sum(axes)] += k * 0.5
        lines.append(p)
    return lines


@pytest.mark.parametrize(
    "centre, axes, expected",
    [
        ((-35, 0, 0), (1, 2), "left"),  # arcuate-like, left hemisphere
        ((35, 0, 0), (1, 2), "right"),
        ((0, -40, 10), (0, 1), "superior"),  # forceps-like, flat in S-I
        ((20, 0, 0), (0, 2), "anterior"),  # thin in A-P
    ],
)
def test_facing_view_shows_the_widest_face(centre, axes, expected):
    lines = _arc(np.array(centre, float), axes)
    assert viz.facing_view(lines) == expected
    if expected in ("left", "right"):
        # seen from outside the brain: the camera looks toward the midline
        assert np.sign(viz.VIEWS[expected][0]) == -np.sign(centre[0])


def test_facing_view_takes_the_side_from_the_names():
    """A bundle's name gives its hemisphere wherever its centre lies (a
    native space whose x = 0 is not the midline); mixed or unsided names
    leave it to the centre."""
    lines = _arc(np.array([15.0, 0, 0]), (1, 2))  # right of x = 0
    assert viz.facing_view(lines, ["AF_L"]) == "left"
    assert viz.facing_view(lines, ["AF_left", "UF_lh"]) == "left"
    assert viz.facing_view(lines, ["AF_L", "AF_R"]) == "right"
    assert viz.facing_view(lines, ["CC_Mid"]) == "right"
    assert viz.facing_view(lines) == "right"
    # names do not move a view along another axis
    flat = _arc(np.array([0.0, -40, 10]), (0, 1))
    assert viz.facing_view(flat, ["AF_L"]) == "superior"


def test_bundle_side():
    from aae_tract.colors import bundle_side

    assert [bundle_side(n) for n in ("AF_L", "cst_r", "UF-left", "OR_rh")] == [
        "left",
        "right",
        "left",
        "right",
    ]
    assert bundle_side("CC_ForcepsMajor") is None and bundle_side("MCP") is None
    assert bundle_side("F_L_R") is None  # the fornix: both sides
    # the colours agree: F_L_R is not tinted as a right bundle of F_L
    assert viz.bundle_colors(["F_L_R"])["F_L_R"] != viz.bundle_colors(["F_R"])["F_R"]


def test_facing_view_of_nothing_is_oblique():
    assert viz.facing_view([]) == "oblique"
    assert viz.facing_view([np.full((3, 3), np.nan)]) == "oblique"


def test_auto_is_a_view_and_others_are_refused():
    viz._check_view(viz.AUTO_VIEW)
    with pytest.raises(ValueError, match="auto"):
        viz._check_view("sideways")


def test_a_view_direction_goes_to_the_rendering_child_as_numbers():
    import json

    options = {"size": (640, 480), "view": np.array([1.0, 0.0, 0.0])}
    sent = json.loads(json.dumps(viz._as_json(options)))
    assert sent["view"] == [1.0, 0.0, 0.0] and sent["size"] == [640, 480]
    assert viz._as_json({"size": (8, 8), "view": "auto"})["view"] == "auto"


def test_bundle_colors_right_is_lighter_tint_of_left():
    c = viz.bundle_colors(["AF_L", "AF_R"])
    assert sum(c["AF_R"]) > sum(c["AF_L"])
    assert np.argmax(c["AF_R"]) == np.argmax(c["AF_L"])


# ----------------------------------------------------------------------------
# FURY rendering
# ----------------------------------------------------------------------------


@pytest.mark.render
def test_render_bundles_synthetic(tmp_path, renderer_ready, synthetic_bundles):
    out = tmp_path / "bundles.png"
    result = viz.render_bundles(
        list(synthetic_bundles.values()),
        out,
        labels=list(synthetic_bundles),
        title="synthetic",
        size=(640, 480),
    )
    assert result == out
    img = _assert_not_blank(out)
    assert img.shape == (480, 640, 3)
    colours = viz.bundle_colors(list(synthetic_bundles))
    for name, rgb in colours.items():
        assert _pixels_near(img, rgb) > 300, f"{name} is not visible"
    # the camera fits the bundles: they fill most of the drawing area
    top, bottom, left, right = _content_box(img[45:, :420])
    assert bottom - top > 0.6 * (480 - 45)
    _no_temp_files(tmp_path)


@pytest.mark.render
def test_render_bundles_real_sft_and_views(tmp_path, renderer_ready, af_l_sft):
    space, origin = af_l_sft.space, af_l_sft.origin
    first = viz.render_bundles([af_l_sft], tmp_path / "af.png", labels=["AF_L"])
    img = _assert_not_blank(first)
    assert _pixels_near(img, viz.bundle_colors(["AF_L"])["AF_L"]) > 1000
    # the caller's tractogram is not moved to another space
    assert (af_l_sft.space, af_l_sft.origin) == (space, origin)
    # a single tractogram without a list, another view: another picture
    second = viz.render_bundles(af_l_sft, tmp_path / "af_sup.png", view="superior")
    assert not np.array_equal(_assert_not_blank(second), img)
    # auto: a left arcuate fasciculus is seen from the left
    auto = viz.render_bundles(af_l_sft, tmp_path / "af_auto.png", view="auto")
    left = viz.render_bundles(af_l_sft, tmp_path / "af_left.png", view="left")
    assert np.array_equal(_assert_not_blank(auto), _assert_not_blank(left))


@pytest.mark.render
def test_render_comparison_two_panels(tmp_path, renderer_ready, synthetic_bundles):
    real = synthetic_bundles["AF_L"]
    generated = _arcs(25, (-35, 0, 0), 35, seed=7)
    out = viz.render_comparison(
        real,
        generated,
        tmp_path / "cmp.png",
        bundle="AF_L",
        size=(900, 450),
        generated_label="generated, median 55.0 mm",  # also through the child
    )
    img = _assert_not_blank(out)
    assert img.shape == (450, 900, 3)
    rgb = viz.bundle_colors(["AF_L"])["AF_L"]
    side = side_width(["AF_L"], (900, 450))
    half = (900 - side) // 2
    left, right = img[80:, :half], img[80:, half : 2 * half]
    assert _pixels_near(left, rgb) > 300, "real panel is empty"
    assert _pixels_near(right, rgb) > 300, "generated panel is empty"
    # one camera for both: the smaller generated arcs look smaller
    left_box, right_box = _content_box(left), _content_box(right)
    assert right_box[1] - right_box[0] < left_box[1] - left_box[0]


_RENDER_THEN_TENSORFLOW = """
import sys
import numpy as np
from aae_tract.viz import render_bundles
rng = np.random.default_rng(0)
lines = [np.cumsum(rng.random((20, 3)), axis=0) for _ in range(10)]
first = render_bundles([lines], sys.argv[1])
import tensorflow  # what Keras does under any backend when seeding
second = render_bundles([lines], sys.argv[2])
print(first, second)
"""


@pytest.mark.render
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow not installed"
)
def test_a_picture_then_tensorflow_in_one_process(tmp_path, renderer_ready):
    # lavapipe and TensorFlow each bring an LLVM: importing TensorFlow after an
    # in-process picture crashed the process (exit status -11)
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    done = subprocess.run(
        [sys.executable, "-c", _RENDER_THEN_TENSORFLOW, str(first), str(second)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.array_equal(_assert_not_blank(first), _assert_not_blank(second))


def test_render_without_adapter_warns_and_returns_none(
    tmp_path, monkeypatch, caplog, synthetic_bundles
):
    monkeypatch.setattr(viz, "_needs_child", lambda: False)
    monkeypatch.setattr(viz, "adapter_problem", lambda: "no wgpu adapter (test)")
    lines = synthetic_bundles["AF_L"]
    with caplog.at_level(logging.WARNING, logger="aae_tract.viz"):
        assert viz.render_bundles([lines], tmp_path / "a.png") is None
        assert viz.render_comparison(lines, lines, tmp_path / "b.png") is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("no picture was made: no wgpu adapter (test)") == 2
    assert not list(tmp_path.iterdir())


def test_render_failure_keeps_existing_picture(
    tmp_path, monkeypatch, caplog, synthetic_bundles
):
    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(viz, "_needs_child", lambda: False)
    monkeypatch.setattr(viz, "adapter_problem", lambda: None)
    monkeypatch.setattr(viz, "_render_panels", broken)
    out = tmp_path / "old.png"
    out.write_bytes(b"previous picture")
    with caplog.at_level(logging.WARNING, logger="aae_tract.viz"):
        assert viz.render_bundles([synthetic_bundles["AF_L"]], out) is None
    assert out.read_bytes() == b"previous picture"
    assert "device lost" in caplog.text
    _no_temp_files(tmp_path)


def test_render_nothing_to_draw(tmp_path, caplog):
    nan_line = np.full((5, 3), np.nan, np.float32)
    with caplog.at_level(logging.WARNING, logger="aae_tract.viz"):
        assert viz.render_bundles([[nan_line]], tmp_path / "x.png") is None
    assert "no streamlines to draw" in caplog.text


def test_render_rejects_bad_input(tmp_path):
    with pytest.raises(TractogramError, match="shape"):
        viz.render_bundles([[np.zeros((4, 2))]], tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        viz.render_bundles([[np.zeros((4, 3))]], tmp_path / "x.png", labels=["a", "b"])
    with pytest.raises(ValueError, match="view"):
        viz.render_bundles([[np.zeros((4, 3))]], tmp_path / "x.png", view="sideways")


# ----------------------------------------------------------------------------
# matplotlib figures
# ----------------------------------------------------------------------------


def _history(n=12):
    epochs = np.arange(n)
    return {
        "loss": list(2.0 * np.exp(-epochs / 4) + 0.3),
        "recon_loss": list(np.exp(-epochs / 3) + 0.05),
        "val_recon_loss": list(np.exp(-epochs / 3.5) + 0.08),
        "disc_loss": list(0.69 + 0.05 * np.sin(epochs)),
        "gen_loss": list(0.7 + 0.1 * np.cos(epochs)),
        "ar_loss": list(0.5 * np.exp(-epochs / 6) + 0.1),
        "val_ar_loss": list(0.5 * np.exp(-epochs / 6) + 0.15),
        "smooth_loss": list(0.01 * np.exp(-epochs / 8)),
    }


def test_plot_training_curves(tmp_path):
    out = plots.plot_training_curves(_history(), tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    img = _assert_not_blank(out)
    # training and validation reconstruction curves are drawn in colour
    assert _pixels_near(img, (0.12, 0.47, 0.71), tol=30) > 200
    _no_temp_files(tmp_path)


def test_plot_training_curves_marks_the_phases(tmp_path):
    """Self-training's phase is a grey dotted line on every panel."""
    plain = plots.plot_training_curves(_history(), tmp_path / "plain.png")
    marked = plots.plot_training_curves(
        _history(), tmp_path / "marked.png", phases=[(7, "self-training")]
    )

    def grey(path):
        return _pixels_near(_image(path).astype(int), (0.45, 0.45, 0.45), tol=12)

    assert grey(marked) > grey(plain) + 300
    _no_temp_files(tmp_path)


def test_training_curves_draw_the_decoder_only_stage_after_the_epochs(tmp_path):
    history = _history()
    n = len(history["loss"])
    stage = {"epochs": 4, "recon_loss": [0.5, 0.4, 0.35, 0.3], "val_recon_loss": []}
    curves, xs, n_epochs, last = plots._curves(history, stage)
    assert (n_epochs, last) == (n, n + 4)
    name = f"recon_loss {plots.STAGE_SUFFIX}"
    np.testing.assert_array_equal(xs[name], np.arange(n + 1, n + 5))
    np.testing.assert_array_equal(curves[name], stage["recon_loss"])
    np.testing.assert_array_equal(xs["loss"], np.arange(1, n + 1))
    assert f"val_recon_loss {plots.STAGE_SUFFIX}" not in curves  # empty: not drawn
    assert plots._curves(history, None)[3] == n
    # drawn: the stage's curve in the next colour, and its phase marked
    plain = plots.plot_training_curves(history, tmp_path / "plain.png")
    staged = plots.plot_training_curves(history, tmp_path / "staged.png", stage=stage)

    def orange(path):
        return _pixels_near(_image(path).astype(int), (1.0, 0.50, 0.05), tol=30)

    assert orange(staged) > orange(plain) + 50
    _no_temp_files(tmp_path)


def test_training_curves_shade_the_decoder_only_stage(tmp_path, monkeypatch):
    """Every panel shades the stage; those with no curve in it say that the
    stage records none of their losses, the reconstruction panel (whose
    curve goes on) not."""
    panels = []  # per figure: title -> (its texts, its patches)
    save = plots.save_figure

    def keep(fig, path):
        panels.append(
            {
                ax.get_title(): ([t.get_text() for t in ax.texts], len(ax.patches))
                for ax in fig.axes
                if ax.get_visible()
            }
        )
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    history = _history()
    stage = {"epochs": 4, "recon_loss": [0.5, 0.4, 0.35, 0.3]}
    plots.plot_training_curves(history, tmp_path / "staged.png", stage=stage)
    plots.plot_training_curves(history, tmp_path / "plain.png")
    staged, plain = panels
    assert staged.pop("Reconstruction") == ([], 1)
    assert len(staged) >= 3
    assert all(v == (["decoder-only stage:\nnot recorded"], 1) for v in staged.values())
    assert all(v == ([], 0) for v in plain.values())


def test_plot_training_curves_unknown_keys_and_short_lists(tmp_path):
    history = {"custom_metric": [3.0, 2.0, 1.5], "val_custom_metric": [3.5], "x": [1]}
    _assert_not_blank(plots.plot_training_curves(history, tmp_path / "c.png"))
    with pytest.raises(ValueError, match="empty"):
        plots.plot_training_curves({"loss": []}, tmp_path / "d.png")


def _latent(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    length = rng.uniform(60, 160, n) + 20 * labels
    z = rng.normal(size=(n, 16))
    z[:, 0] = (length - 110) / 30 + rng.normal(0, 0.2, n)
    z[:, 1:4] += 3 * labels[:, None]
    return z, labels, length


def test_plot_latent_space(tmp_path):
    z, labels, length = _latent()
    names = ["AF_L", "CC_ForcepsMajor", "CST_R"]
    out = plots.plot_latent_space(z, labels, length, names, tmp_path / "latent.png")
    img = _assert_not_blank(out)
    for name, rgb in viz.bundle_colors(names).items():
        assert _pixels_near(img, rgb, tol=45) > 50, f"{name} points missing"
    out2 = plots.plot_latent_space(
        z[:, :1], labels, length, names, tmp_path / "age.png", attribute_name="age"
    )
    _assert_not_blank(out2)


def test_plot_latent_space_draws_prior_samples(tmp_path):
    z, labels, length = _latent()
    names = ["AF_L", "CC_ForcepsMajor", "CST_R"]
    prior = np.random.default_rng(0).standard_normal((2000, z.shape[1])) * 3.0
    plain = plots.plot_latent_space(z, labels, length, names, tmp_path / "a.png")
    with_prior = plots.plot_latent_space(
        z, labels, length, names, tmp_path / "b.png", prior_samples=prior
    )
    grey = (0.8, 0.8, 0.8)
    extra = _pixels_near(_assert_not_blank(with_prior), grey, tol=6)
    assert extra > 5 * _pixels_near(_assert_not_blank(plain), grey, tol=6) + 1000


def test_plot_latent_space_rejects_mismatched_inputs(tmp_path):
    z, labels, length = _latent()
    with pytest.raises(ValueError, match="must match"):
        plots.plot_latent_space(z, labels[:-1], length, ["a", "b", "c"], tmp_path / "x")
    with pytest.raises(ValueError, match="index"):
        plots.plot_latent_space(z, labels, length, ["a", "b"], tmp_path / "x.png")


def test_evaluation_figure_text_does_not_overlap(tmp_path, monkeypatch):
    """The figure's title clears the first row's panel titles, and the values
    written over paired bars (model, reference) do not run into each other:
    the embedded default's 3 bundles and the phantom's 6, with the metrics
    ``metrics.json`` holds (every metric, a reference, values of 3 digits)."""
    from matplotlib.transforms import Bbox

    from aae_tract.metrics import METRIC_NAMES as names

    boxes = []
    save = plots.save_figure

    def keep(fig, path):
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        top = [ax.title.get_window_extent(renderer) for ax in fig.axes]
        # each value with 3 pixels (2 points) of room on either side
        values = [
            [
                Bbox.from_extents(e.x0 - 3, e.y0, e.x1 + 3, e.y1)
                for e in (t.get_window_extent(renderer) for t in ax.texts)
            ]
            for ax in fig.axes
        ]
        boxes.append((fig._suptitle.get_window_extent(renderer), top, values))
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    rng = np.random.default_rng(0)
    for bundles in (
        ["AF_L", "CC_ForcepsMajor", "CST_R"],
        [f"B{i}_L" for i in range(6)],
    ):
        per_bundle = {
            b: {n: float(rng.uniform(0.9, 0.99)) for n in names} for b in bundles
        }
        metrics = {n: 0.966 for n in names}
        metrics.update(bundles=bundles, per_bundle=per_bundle)
        reference = {n: 0.972 for n in names}
        reference["per_bundle"] = {
            b: {n: float(rng.uniform(0.9, 0.99)) for n in names} for b in bundles
        }
        plots.plot_evaluation(
            metrics, tmp_path / "e.png", reference=reference, title="model on data"
        )
    for suptitle, titles, values in boxes:
        assert all(suptitle.y0 >= t.y1 for t in titles), "title over a panel's"
        for texts in values:
            for i, a in enumerate(texts):
                for b in texts[i + 1 :]:
                    assert not a.overlaps(b), "two values run together"


def test_plot_evaluation_with_reference_and_per_bundle(tmp_path):
    names = ["AF_L", "CC_ForcepsMajor", "CST_R"]
    per_bundle = {
        b: {
            "recon_mdf_mm": 4.0 + i,
            "label_fidelity": 0.9,
            "ar_spearman": -0.2 + 0.4 * i,
            "diversity_ratio": 0.8,
            "density_dice": 0.6,
        }
        for i, b in enumerate(names)
    }
    metrics = {
        "recon_mdf_mm": 5.0,
        "label_fidelity": 0.9,
        "length_mae_mm": 7.5,
        "ar_spearman": 0.2,
        "diversity_ratio": 0.8,
        "density_dice": 0.6,
        "n_train": 600,
        "n_eval": 150,
        "seconds": 12.5,
        "bundles": names,
        "per_bundle": per_bundle,
    }
    reference = {"recon_mdf_mm": 3.0, "label_fidelity": 1.0, "density_dice": 0.7}
    # the generation settings metrics.json records are not drawn as metrics
    settings = {**metrics, "subject_noise": 0.1, "placement_noise": 0.9}
    assert plots._metric_names(settings, reference) == plots._metric_names(
        metrics, reference
    )
    out = plots.plot_evaluation(metrics, tmp_path / "eval.png", reference=reference)
    img = _assert_not_blank(out)
    for name, rgb in viz.bundle_colors(names).items():
        assert _pixels_near(img, rgb, tol=20) > 200, f"{name} bars missing"
    _assert_not_blank(
        plots.plot_evaluation({"recon_mdf_mm": float("nan")}, tmp_path / "nan.png")
    )
    with pytest.raises(ValueError, match="no number"):
        plots.plot_evaluation({"bundles": names}, tmp_path / "none.png")
    _no_temp_files(tmp_path)


def test_viz_still_finds_the_figures_that_moved_to_plots():
    for name in ("plot_training_curves", "plot_latent_space", "plot_evaluation"):
        with pytest.warns(DeprecationWarning, match=f"aae_tract.plots.{name}"):
            assert getattr(viz, name) is getattr(plots, name)
    with pytest.raises(AttributeError):
        viz.plot_nothing  # noqa: B018
