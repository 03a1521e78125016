"""The population normaliser on both API generations and on bodies it must refuse."""

from __future__ import annotations

import json

import pytest

from flows.core.errors import PopulationFormatError
from flows.core.population import normalise_population
from flows.devkit.samples import population_body, sample_population


@pytest.mark.parametrize("generation", ["tesseract", "legacy"])
def test_both_generations(generation):
    expected = sorted(sample_population().items())
    body = population_body(generation)
    assert normalise_population(body) == expected
    assert normalise_population(json.loads(body)) == expected
    assert normalise_population(body.decode()) == expected


def test_real_tesseract_shape_floats_become_ints():
    body = {"columns": ["Year", "Population"], "data": [{"Year": 2023, "Population": 334914896.0}]}
    assert normalise_population(body) == [(2023, 334914896)]
    assert normalise_population({"data": [{"ID Year": 2019, "Year": "2019", "Population": 5}]}) == [(2019, 5)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "HTML"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"error": "cube not found"}', "no `data`"),
        (b'{"data": []}', "empty"),
        (b'{"data": [{"Nation": "United States", "Population": 1}]}', "no year"),
        (b'{"data": [{"Year": 2019, "Population": "many"}]}', "not a number"),
        (b'{"data": [{"Year": 2019, "Population": NaN}]}', "not finite"),
        (b'{"data": [{"Year": true, "Population": 1}]}', "no year"),
        (b'{"data": [{"Year": 2019, "Population": 1}, {"Year": 2019, "Population": 2}]}', "twice"),
        (b'{"data": [{"Year": 2019, "Population": -1}]}', "negative"),
    ],
)
def test_bad_bodies(body, reason):
    with pytest.raises(PopulationFormatError, match=reason):
        normalise_population(body)
