"""GenEval's rules on hand-made detections whose right verdict is known: thresholds, the per-class cap, the
position rule and its margin, include / exclude clauses, every task, and the score."""
import numpy as np
import pytest

from reca_nb.evaluation.geneval_rules import (CLASSNAMES, COCO_NAMES, TASKS, Detection, box_of_mask, check_record,
                                              evaluate, keep, relative_position, task_scores)


def det(x1, y1, x2, y2, score=0.95):
    return Detection((x1, y1, x2, y2), score)


def test_class_names_are_coco_with_genevals_three_renames():
    assert len(CLASSNAMES) == 80 and len(set(CLASSNAMES)) == 80
    assert CLASSNAMES[:3] == ("person", "bicycle", "car") and CLASSNAMES[-1] == "toothbrush"
    assert CLASSNAMES[64:67] == ("computer mouse", "tv remote", "computer keyboard")
    assert [i for i, (a, b) in enumerate(zip(COCO_NAMES, CLASSNAMES)) if a != b] == [64, 65, 66]
    assert {"couch", "potted plant", "dining table", "tv", "hair drier", "sports ball"} <= set(CLASSNAMES)


def test_keep_applies_the_task_threshold_sorts_and_caps_at_16():
    dets = {"cup": [det(0, 0, 1, 1, s) for s in (0.3, 0.31, 0.5, 0.95, 0.89, 0.91)], "cat": [det(0, 0, 1, 1, 0.2)]}
    kept = keep(dets, "two_object")
    assert list(kept) == ["cup"]  # a class with nothing above the threshold disappears
    assert [d.score for d in kept["cup"]] == [0.95, 0.91, 0.89, 0.5, 0.31]  # strictly above 0.3, best first
    assert [d.score for d in keep(dets, "counting")["cup"]] == [0.95, 0.91]  # counting: above 0.9
    many = {"bird": [det(0, 0, 1, 1, 0.4 + i / 100) for i in range(20)]}
    assert len(keep(many, "single_object")["bird"]) == 16


def test_box_of_mask_is_the_tight_box_with_exclusive_ends():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert box_of_mask(m) == (3.0, 2.0, 9.0, 5.0)
    assert box_of_mask(np.zeros((4, 4), bool)) is None


def test_relative_position_directions_and_image_y_down():
    b = (40, 40, 60, 60)
    assert relative_position((0, 40, 20, 60), b) == {"left of"}
    assert relative_position((80, 40, 100, 60), b) == {"right of"}
    assert relative_position((40, 0, 60, 20), b) == {"above"}  # smaller y = higher in the picture
    assert relative_position((40, 80, 60, 100), b) == {"below"}
    assert relative_position((0, 0, 20, 20), b) == {"left of", "above"}  # the diagonal: both hold (0.707 > 0.5)


def test_position_margin_is_a_tenth_of_the_summed_sizes():
    # widths 50 + 50: the x offset shrinks by 0.1 * 100 = 10 px, and what remains must exceed half the raw
    # offset, so "left of" needs centres more than 20 px apart
    a = (0, 0, 50, 50)
    assert relative_position(a, (21, 0, 71, 50)) == {"left of"}
    assert relative_position(a, (19, 0, 69, 50)) == set()  # 9 of 19 px remain: under half
    assert relative_position(a, (19, 0, 69, 50), margin=0.0) == {"left of"}  # without the margin it would hold
    assert relative_position(a, (9, 0, 59, 50)) == set()  # inside the margin altogether
    # tall objects: their 30 px offset on y vanishes in the 86 px margin, 120 of 160 px remain on x
    assert relative_position((0, 0, 100, 400), (60, 0, 360, 460)) == {"left of"}
    assert relative_position(a, a) == set()


CUP = {"class": "cup", "count": 1}


@pytest.mark.parametrize("objects,ok", [({"cup": [det(0, 0, 5, 5)]}, True), ({"cat": [det(0, 0, 5, 5)]}, False)])
def test_single_object(objects, ok):
    assert evaluate(objects, {"tag": "single_object", "include": [CUP]})[0] is ok


def test_two_object_needs_both():
    rec = {"tag": "two_object", "include": [CUP, {"class": "cat", "count": 1}]}
    assert evaluate({"cup": [det(0, 0, 5, 5)], "cat": [det(5, 5, 9, 9)]}, rec)[0]
    ok, reason = evaluate({"cup": [det(0, 0, 5, 5)]}, rec)
    assert not ok and reason == "expected cat>=1, found 0"


@pytest.mark.parametrize("n,ok", [(2, False), (3, True), (4, False)])
def test_counting_include_and_exclude(n, ok):
    rec = {"tag": "counting", "include": [{"class": "cup", "count": 3}], "exclude": [{"class": "cup", "count": 4}]}
    verdict, reason = evaluate({"cup": [det(i, 0, i + 1, 1) for i in range(n)]}, rec)
    assert verdict is ok
    if n == 4:
        assert reason == "expected cup<4, found 4"  # the exclude clause: "three" means not four


def test_colors_reads_only_the_most_confident_count_objects():
    seen = []

    def colors_of(dets, name):
        seen.append((len(dets), name))
        return ["red"] * len(dets)

    objects = {"apple": [det(0, 0, 5, 5), det(5, 5, 9, 9)]}
    rec = {"tag": "colors", "include": [{"class": "apple", "count": 1, "color": "red"}]}
    assert evaluate(objects, rec, colors_of)[0] and seen == [(1, "apple")]
    ok, reason = evaluate(objects, {**rec, "include": [{**rec["include"][0], "color": "green"}]}, colors_of)
    assert not ok and reason == "expected green apple>=1, found 1 red"
    with pytest.raises(ValueError, match="colors_of"):
        evaluate(objects, rec)


def test_position_against_the_matched_target_group():
    rec = {"tag": "position", "include": [{"class": "bench", "count": 1},
                                          {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    bench, left, right = det(60, 40, 100, 60), det(0, 40, 20, 60), det(120, 40, 140, 60)
    assert evaluate({"bench": [bench], "dog": [left]}, rec)[0]
    ok, reason = evaluate({"bench": [bench], "dog": [right]}, rec)
    assert not ok and reason == "expected dog left of target, found right of target"
    ok, reason = evaluate({"dog": [left]}, rec)
    assert not ok and "no target for dog to be left of" in reason
    # every matched object must stand in the relation to every target object (only the first `count` count)
    rec2 = {"tag": "position", "include": [{"class": "bench", "count": 2},
                                           {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    bench_far_left = det(-60, 40, -40, 60)
    assert not evaluate({"bench": [bench, bench_far_left], "dog": [left]}, rec2)[0]


def test_color_attr_binds_each_colour_to_its_object():
    rec = {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "blue"},
                                            {"class": "vase", "count": 1, "color": "yellow"}]}
    objects = {"car": [det(0, 0, 5, 5)], "vase": [det(5, 5, 9, 9)]}
    assert evaluate(objects, rec, lambda d, name: ["blue" if name == "car" else "yellow"])[0]
    assert not evaluate(objects, rec, lambda d, name: ["yellow" if name == "car" else "blue"])[0]


def test_task_scores_mean_over_tasks_not_images():
    rows = [{"tag": "single_object", "correct": c} for c in (1, 1, 1, 1)] + [{"tag": "position", "correct": 0}]
    s = task_scores(rows)
    assert s == {"single_object": 1.0, "position": 0.0, "overall": 0.5}  # per image it would be 0.8
    assert len(TASKS) == 6
    with pytest.raises(ValueError):
        task_scores([])


@pytest.mark.parametrize("bad,match", [
    ({"tag": "shapes", "prompt": "x", "include": [CUP]}, "tag"),
    ({"tag": "single_object", "prompt": "x", "include": [{"class": "mouse", "count": 1}]}, "class name"),
    ({"tag": "colors", "prompt": "x", "include": [{**CUP, "color": "teal"}]}, "colour"),
    ({"tag": "position", "prompt": "x", "include": [{**CUP, "position": ["left of", 0]}]}, "earlier"),
    ({"tag": "single_object", "prompt": "x", "include": []}, "no include"),
])
def test_check_record_rejects_what_the_scorer_cannot_read(bad, match):
    with pytest.raises(ValueError, match=match):
        check_record(bad)
