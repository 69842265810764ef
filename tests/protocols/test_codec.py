from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.modbus.codec import DeviceCodec, encode_values, plan_blocks, registers_to_raw
from protocols.modbus.config import ModbusPoint

TYPES = ["int16", "uint16", "int32", "uint32", "float32", "float64"]
ORDERS = ["big", "little"]


def _in_range(dtype: str) -> st.SearchStrategy[float]:
    if dtype.startswith("float"):
        return st.floats(-1e6, 1e6, allow_nan=False, width=32 if dtype == "float32" else 64)
    info = np.iinfo(np.dtype(dtype))
    return st.integers(int(info.min), int(info.max)).map(float)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(TYPES), bo=st.sampled_from(ORDERS), wo=st.sampled_from(ORDERS))
def test_encode_decode_round_trip(data, dtype: str, bo: str, wo: str) -> None:
    values = np.array(data.draw(st.lists(_in_range(dtype), min_size=1, max_size=8)))
    regs, overflow = encode_values(values, dtype, bo, wo)
    assert not overflow.any()
    assert np.array_equal(registers_to_raw(regs, dtype, bo, wo), values)


def test_known_wire_layouts() -> None:
    # 10.0 as float32 is 0x41200000: high word first by default
    assert registers_to_raw(np.array([[0x4120, 0x0000]]), "float32")[0] == 10.0
    assert registers_to_raw(np.array([[0x0000, 0x4120]]), "float32", word_order="little")[0] == 10.0
    assert registers_to_raw(np.array([[0x2041, 0x0000]]), "float32", byte_order="little")[0] == 10.0
    assert registers_to_raw(np.array([[0xFFFF]]), "int16")[0] == -1
    assert registers_to_raw(np.array([[0xFFFF]]), "uint16")[0] == 65535
    assert registers_to_raw(np.array([[0x0001, 0x0000]]), "uint32", word_order="little")[0] == 1


def test_integer_overflow_is_clipped_and_flagged() -> None:
    regs, overflow = encode_values(np.array([40000.0, 5.0, np.nan]), "int16")
    assert overflow.tolist() == [True, False, True]
    assert registers_to_raw(regs, "int16").tolist() == [32767.0, 5.0, 0.0]


def test_scale_and_offset() -> None:
    regs, _ = encode_values(np.array([231.7]), "uint16", scale=0.1, offset=0.0)
    assert regs.tolist() == [[2317]]
    pts = [ModbusPoint(metric="v", address=0, data_type="uint16", scale=0.1, offset=-10.0)]
    codec = DeviceCodec(pts, plan_blocks(pts))
    values, flags = codec.decode([[2317]])
    assert values[0] == pytest.approx(221.7) and flags[0] == 0


def _pt(metric: str, address: int, dtype: str = "float32", rtype: str = "holding") -> ModbusPoint:
    return ModbusPoint(metric=metric, address=address, data_type=dtype, register_type=rtype)


def test_plan_blocks_coalesces_contiguous_and_splits_on_gaps_types_and_length() -> None:
    pts = [_pt("a", 100), _pt("b", 102), _pt("c", 104), _pt("d", 110), _pt("e", 200, rtype="input"),
           _pt("f", 202, "int16", "input")]
    blocks = plan_blocks(pts, max_block=125, max_gap=0)
    assert [(b.register_type, b.start, b.count, b.points) for b in blocks] == [
        ("holding", 100, 6, (0, 1, 2)), ("holding", 110, 2, (3,)), ("input", 200, 3, (4, 5)),
    ]
    # a gap of 4 registers is bridged when allowed
    assert [(b.start, b.count) for b in plan_blocks(pts[:4], max_gap=4)] == [(100, 12)]
    # the block length cap splits
    assert [(b.start, b.count) for b in plan_blocks(pts[:3], max_block=4)] == [(100, 4), (104, 2)]


def test_device_codec_decodes_mixed_types_from_blocks() -> None:
    pts = [_pt("v1", 100), _pt("v2", 102), ModbusPoint(metric="i", address=104, data_type="uint16", scale=0.1),
           ModbusPoint(metric="p", address=105, data_type="int32", word_order="little", scale=0.001)]
    blocks = plan_blocks(pts)
    assert len(blocks) == 1
    regs = np.concatenate([
        encode_values(np.array([11.05, 10.9]), "float32")[0].ravel(),
        encode_values(np.array([321.4]), "uint16", scale=0.1)[0].ravel(),
        encode_values(np.array([-5.123]), "int32", word_order="little", scale=0.001)[0].ravel(),
    ])
    values, flags = DeviceCodec(pts, blocks).decode([regs])
    assert values == pytest.approx([11.05, 10.9, 321.4, -5.123], rel=1e-6)
    assert flags.tolist() == [0, 0, 0, 0]


def test_nan_decodes_as_invalid() -> None:
    pts = [_pt("v", 0)]
    values, flags = DeviceCodec(pts, plan_blocks(pts)).decode([[0x7FC0, 0x0000]])
    assert np.isnan(values[0]) and flags[0] == 1


def test_sunspec_not_available_markers_decode_as_invalid() -> None:
    pts = [ModbusPoint(metric="t", address=0, data_type="int16", scale=0.1),
           ModbusPoint(metric="i", address=1, data_type="uint16"),
           ModbusPoint(metric="raw", address=2, data_type="uint16", not_available_marker=False),
           ModbusPoint(metric="ok", address=3, data_type="int16")]
    values, flags = DeviceCodec(pts, plan_blocks(pts)).decode([[0x8000, 0xFFFF, 0xFFFF, 0x8001]])
    assert np.isnan(values[0]) and np.isnan(values[1])
    assert values[2] == 65535 and values[3] == -32767
    assert flags.tolist() == [1, 1, 0, 0]
