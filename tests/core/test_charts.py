"""The report charts: well-formed SVG, a point per year, a gap where a year is missing."""

from __future__ import annotations

from xml.etree import ElementTree

from hypothesis import given
from hypothesis import strategies as st

from flows.core.charts import Panel, data_uri, line_chart, short_number

NS = "{http://www.w3.org/2000/svg}"


def test_charts_are_svg_with_a_point_per_year_and_a_gap_where_a_year_is_missing():
    svg = line_chart([Panel("p", [(2018, 1.0), (2019, 2.0), (2021, 3.0)], (2013, 2018), "window")])
    root = ElementTree.fromstring(svg)
    ns = NS
    assert len(root.findall(f".//{ns}circle")) == 3
    assert len(root.findall(f".//{ns}polyline")) == 2  # 2018-2019, then 2021 alone: no line across 2020
    assert len(root.findall(f".//{ns}rect")) == 2  # the card and the window band
    assert data_uri(svg).startswith("data:image/svg+xml;base64,")
    assert ElementTree.fromstring(line_chart([Panel("empty", [])])) is not None


def test_axis_labels_are_short():
    assert [short_number(v) for v in (316_128_839, 4_200, 12.5, -21)] == ["316.1M", "4.2k", "12.5", "-21"]


@given(
    st.lists(
        st.tuples(st.integers(1790, 2200), st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)),
        max_size=60,
        unique_by=lambda p: p[0],
    )
)
def test_any_series_draws_well_formed_svg_with_one_point_each(points):
    root = ElementTree.fromstring(line_chart([Panel("any", points, (2013, 2018), "window")]))
    assert len(root.findall(f".//{NS}circle")) == len(points)
