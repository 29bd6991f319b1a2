"""Thirty JSON Schemas for the structured-output tests: nested objects, arrays with min/max items,
enums, number ranges, required and optional keys, string patterns and lengths, $ref / $defs, anyOf,
const, booleans and nulls. Every string and array is bounded so that a generation under the grammar
ends within the tests' token budget whatever the model prefers (a tiny random model included)."""

from __future__ import annotations

NAME = {"type": "string", "minLength": 1, "maxLength": 12}
SHORT = {"type": "string", "maxLength": 8}

SCHEMAS: dict[str, dict] = {
    "flat_object": {"type": "object", "required": ["name", "age"],
                    "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}}},
    "boolean_flag": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    "enum_color": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},
                   "required": ["color"]},
    "integer_range": {"type": "object", "properties": {"n": {"type": "integer", "minimum": -5, "maximum": 5}},
                      "required": ["n"]},
    "integer_exclusive": {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 0,
                                                                 "exclusiveMaximum": 10}}, "required": ["n"]},
    "number_range": {"type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 1}},
                     "required": ["x"]},
    "array_bounded": {"type": "object", "properties": {"tags": {"type": "array", "items": SHORT, "minItems": 1,
                                                                "maxItems": 3}}, "required": ["tags"]},
    "array_of_enums": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 2, "maxItems": 4},
    "array_exact": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 3,
                    "maxItems": 3},
    "nested_object": {"type": "object", "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999},
                                                  "name": NAME}, "required": ["id", "name"]}},
        "required": ["user"]},
    "deeply_nested": {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {
        "type": "object", "properties": {"c": {"type": "boolean"}}, "required": ["c"]}}, "required": ["b"]}},
        "required": ["a"]},
    "optional_keys": {"type": "object", "properties": {"title": SHORT, "note": SHORT, "count": {
        "type": "integer", "minimum": 0, "maximum": 50}}, "required": ["title"]},
    "all_optional": {"type": "object", "properties": {"x": {"type": "boolean"}, "y": {"type": "boolean"}}},
    "string_pattern_digits": {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                              "required": ["zip"]},
    "string_pattern_code": {"type": "object", "required": ["code"],
                            "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}}},
    "string_lengths": {"type": "object", "properties": {"word": {"type": "string", "minLength": 3, "maxLength": 5}},
                       "required": ["word"]},
    "defs_ref": {"$defs": {"point": {"type": "object", "required": ["x", "y"],
                                     "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9},
                                                    "y": {"type": "integer", "minimum": 0, "maximum": 9}}}},
                 "type": "object", "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
                 "required": ["start", "end"]},
    "defs_ref_array": {"$defs": {"item": {"type": "object", "properties": {"sku": SHORT, "qty": {
        "type": "integer", "minimum": 1, "maximum": 9}}, "required": ["sku", "qty"]}},
        "type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 2},
    "any_of": {"type": "object", "properties": {"value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 99},
                                                                    {"type": "boolean"}]}}, "required": ["value"]},
    "nullable": {"type": "object", "properties": {"middle": {"anyOf": [SHORT, {"type": "null"}]}},
                 "required": ["middle"]},
    "const_value": {"type": "object", "properties": {"version": {"const": 2}, "kind": {"const": "event"}},
                    "required": ["version", "kind"]},
    "enum_mixed": {"type": "object", "properties": {"level": {"enum": [1, 2, 3, "max"]}}, "required": ["level"]},
    "array_of_objects": {"type": "object", "properties": {"people": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"name": NAME, "adult": {"type": "boolean"}}, "required": ["name", "adult"]}}},
        "required": ["people"]},
    "matrix": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
        "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": 0, "maximum": 9}}},
    "top_level_enum": {"enum": ["yes", "no", "maybe"]},
    "top_level_integer": {"type": "integer", "minimum": 100, "maximum": 200},
    "top_level_boolean": {"type": "boolean"},
    "many_required": {"type": "object", "required": list("abcdef"),
                      "properties": {k: {"type": "integer", "minimum": 0, "maximum": 9} for k in "abcdef"}},
    "event": {"type": "object", "properties": {
        "title": NAME, "day": {"type": "integer", "minimum": 1, "maximum": 31},
        "month": {"enum": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]},
        "attendees": {"type": "array", "items": NAME, "maxItems": 3}, "online": {"type": "boolean"}},
        "required": ["title", "day", "month", "online"]},
    "product": {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^P[0-9]{4}$"}, "price": {"type": "number", "minimum": 0, "maximum": 1000},
        "stock": {"type": "integer", "minimum": 0, "maximum": 500}, "category": {"enum": ["book", "toy", "food"]},
        "dimensions": {"type": "object", "properties": {"w": {"type": "integer", "minimum": 1, "maximum": 99},
                                                        "h": {"type": "integer", "minimum": 1, "maximum": 99}},
                       "required": ["w", "h"]}},
        "required": ["id", "price", "stock", "category"]},
}
