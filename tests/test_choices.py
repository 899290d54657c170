"""The light option-choice names (``medsamkit.choices``) match the registries they stand for."""

from medsamkit import choices
from medsamkit.data.layouts import LAYOUTS
from medsamkit.evaluation import compare, report
from medsamkit.inference import volume3d
from medsamkit.models import registry
from medsamkit.preprocessing import intensity


def test_model_names_are_the_registry_in_order():
    assert choices.MODEL_NAMES == tuple(registry.MODELS)
    assert choices.DEFAULT_MODEL == registry.DEFAULT_MODEL
    assert choices.DEFAULT_MODEL in choices.MODEL_NAMES


def test_layout_names_are_the_layouts_in_detection_order():
    assert choices.LAYOUT_NAMES == tuple(LAYOUTS)


def test_heavy_modules_take_their_tuples_from_choices():
    assert intensity.MODALITIES is choices.MODALITIES
    assert volume3d.OVERLAP_RULES is choices.OVERLAP_RULES
    assert compare.RANKS is choices.RANKS
    assert (report.CSV_NAME, report.SUMMARY_NAME, report.MARKDOWN_NAME) == (
        choices.REPORT_CSV, choices.REPORT_SUMMARY, choices.REPORT_MARKDOWN)
