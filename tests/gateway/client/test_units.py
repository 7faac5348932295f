"""Pure pieces of the SDK: input encoding, result parsing, settings, TLS options, error mapping."""

from __future__ import annotations

import numpy as np
import pytest

from edgecloud import codec
from edgecloud.errors import InternalError
from edgecloud.types import InferResponse, Tensor
from gateway.client import EmbedResult, InferResult, RetryPolicy, TlsOptions
from gateway.client.calls import Calls
from gateway.client.inputs import tensor_from_value
from gateway.client.settings import ClientSettings, channel_options
from protos import inference_pb2 as pb

# inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("array", "datatype"), [
    (np.zeros((2, 3), np.float32), "FP32"),
    (np.zeros(4, np.float16), "FP16"),
    (np.zeros(1, ">i4"), "INT32"),
    (np.zeros((1, 1), np.uint8), "UINT8"),
    (np.array([True, False]), "BOOL"),
    (np.array(["a", "bc"]), "BYTES"),
    (np.array([b"a", b"bc"]), "BYTES"),
])
def test_arrays_keep_shape_and_map_to_their_datatype(array, datatype):
    tensor = tensor_from_value("x", array)
    assert tensor.datatype == datatype and tensor.shape == array.shape


def test_every_input_round_trips_through_the_wire_form():
    calls = Calls(30.0, 64 << 20)
    big_endian = np.arange(6, dtype=">f8").reshape(2, 3)
    call = calls.infer("m", {"f": big_endian, "s": ["héllo", b"\x00raw"]}, outputs=["o"],
                       parameters={"no_cache": True, "k": 3}, version="2", request_id="id-1")
    decoded = codec.request_from_proto(pb.ModelInferRequest.FromString(call.request.SerializeToString()))
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "2", "id-1")
    assert decoded.parameters == {"no_cache": True, "k": 3}
    assert [o.name for o in decoded.outputs] == ["o"]
    np.testing.assert_array_equal(decoded.input("f").data, big_endian)
    assert list(decoded.input("s").data) == ["héllo".encode(), b"\x00raw"]
    assert len(call.request.raw_input_contents) == 2  # sent raw, not as typed contents


@pytest.mark.parametrize("value", ["a bare string", [1, 2, 3], np.array([1, "a"], dtype=object),
                                   np.zeros(2, np.complex64), 3.0])
def test_values_that_cannot_be_encoded_raise_type_error_naming_the_input(value):
    with pytest.raises(TypeError, match=r"inputs\[x\]"):
        tensor_from_value("x", value)


def test_embed_refuses_a_single_string_and_timeouts_must_be_positive():
    calls = Calls(30.0, 1 << 20)
    with pytest.raises(TypeError):
        calls.embed("hello")
    with pytest.raises(ValueError):
        calls.server_live(timeout_s=0)
    assert calls.server_live().timeout_s == 30.0 and calls.server_live(timeout_s=2).timeout_s == 2


# results ---------------------------------------------------------------------------------------


def _response(**parameters) -> pb.ModelInferResponse:
    data = np.ones((2, 384), np.float32)
    return codec.response_to_proto(InferResponse("m", [Tensor("embedding", "FP32", (2, 384), data)],
                                                 model_version="1", id="r", parameters=parameters))


def test_where_served_comes_from_response_parameters():
    calls = Calls(None, 64 << 20)
    result = calls.infer("m", {"x": ["a"]}).parse(_response(served_by="cloud", route_reason="edge_rtt_over_threshold",
                                                            variant="fp32", cache_hit=False))
    assert (result.served_by, result.route_reason, result.variant) == ("cloud", "edge_rtt_over_threshold", "fp32")
    assert result.parameters["cache_hit"] is False
    assert (result.model_name, result.model_version, result.id) == ("m", "1", "r")
    bare = calls.infer("m", {"x": ["a"]}).parse(_response())
    assert bare.served_by is bare.route_reason is bare.variant is None


def test_as_numpy_names_what_is_there():
    result = Calls(None, 64 << 20).infer("m", {"x": ["a"]}).parse(_response())
    with pytest.raises(KeyError, match="embedding"):
        result.as_numpy("logits")


def test_embed_checks_the_answer_fits_the_texts():
    calls = Calls(None, 64 << 20)
    assert calls.embed(["a", "b"]).parse(_response()).embeddings.shape == (2, 384)
    with pytest.raises(InternalError, match="3 texts"):
        calls.embed(["a", "b", "c"]).parse(_response())
    assert isinstance(calls.embed(["a", "b"]).parse(_response()), (EmbedResult, InferResult))


def test_a_malformed_response_is_internal_not_invalid_argument():
    msg = _response()
    msg.raw_output_contents[0] = b"short"
    with pytest.raises(InternalError, match="malformed"):
        Calls(None, 64 << 20).infer("m", {"x": ["a"]}).parse(msg)


def test_a_response_shape_beyond_the_message_limit_is_refused_before_allocating():
    msg = pb.ModelInferResponse(model_name="m")
    msg.outputs.add(name="o", datatype="BYTES", shape=[2**40])
    msg.raw_output_contents.append(b"")
    with pytest.raises(InternalError):
        Calls(None, 1 << 20).infer("m", {"x": ["a"]}).parse(msg)


# settings and TLS ------------------------------------------------------------------------------


def _settings(**overrides) -> ClientSettings:
    kwargs = dict(tls=None, timeout_s=30.0, retry=RetryPolicy(), max_message_bytes=1 << 20, api_key=None,
                  metadata=(), keepalive_time_s=30.0, keepalive_timeout_s=10.0, extra_channel_options=())
    kwargs.update(overrides)
    return ClientSettings.build("127.0.0.1:1", **kwargs)


def test_channel_options_carry_message_sizes_and_keepalive():
    options = dict(channel_options(1234, 20.0, 5.0, TlsOptions(server_name_override="gw.internal"),
                                   [("grpc.keepalive_time_ms", 60_000)]))
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == 1234
    assert options["grpc.keepalive_time_ms"] == 60_000  # an explicit option wins
    assert options["grpc.keepalive_timeout_ms"] == 5000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.ssl_target_name_override"] == "gw.internal"
    assert "grpc.keepalive_time_ms" not in dict(channel_options(1234, None, 5.0))


def test_api_key_becomes_a_bearer_token_next_to_other_metadata():
    settings = _settings(api_key="s3cret", metadata={"X-Tenant": "acme"})
    assert settings.metadata == (("x-tenant", "acme"), ("authorization", "Bearer s3cret"))
    with pytest.raises(ValueError):
        _settings(api_key="k", metadata=[("authorization", "Basic x")])
    with pytest.raises(ValueError):
        _settings(api_key="")


@pytest.mark.parametrize("overrides", [{"timeout_s": 0}, {"max_message_bytes": 0}, {"keepalive_time_s": -1}])
def test_bad_settings_fail_at_construction(overrides):
    with pytest.raises(ValueError):
        _settings(**overrides)


def test_tls_options_validate_their_sources(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        TlsOptions(client_certificate_chain=b"x")
    with pytest.raises(ValueError, match="as bytes"):
        TlsOptions(root_certificates="-----BEGIN CERTIFICATE-----\n...").channel_credentials()
    with pytest.raises(ValueError, match="root_certificates"):
        TlsOptions(root_certificates=tmp_path / "missing.pem").channel_credentials()
    assert not TlsOptions().mutual and TlsOptions(client_certificate_chain=b"c", client_private_key=b"k").mutual
